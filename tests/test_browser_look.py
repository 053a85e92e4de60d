"""The look in a real browser (chromium, playwright): dark by default, a light choice that
survives a reload, WCAG AA contrast for every visible text in both themes, 44 px touch
targets on a 412x915 phone, and the details of item 7 of the page issue (reading order,
controls a turbo checkpoint ignores, destructive buttons).

The server and browser fixtures are ``test_browser.py``'s. Screenshots of the first screen
(both themes, both sizes) go to ``$ACE_STUDIO_SCREENSHOTS`` (default ``test-artifacts/look``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import test_browser
from look_probes import CONTRAST_JS, IS_DARK_JS, NAMES_JS, TAP_TARGETS_JS
from test_browser import ARTIFACTS, CHROMIUM, DESKTOP, MIN_CONTRAST, MIN_TAP_PX, PHONE, overflow
from test_browser_loop import STAGE, start_run, wait_for_stage

from theme import THEME_STORAGE_KEY

SCREENSHOTS = Path(os.environ.get("ACE_STUDIO_SCREENSHOTS", ARTIFACTS / "look"))
SIZES = {"desktop": DESKTOP, "phone": PHONE}
THEMES = ("dark", "light")
MODES = ("Generate", "Cover", "Extend", "Edit", "Lyrics")
MIN_UI_CONTRAST = 3.0  # WCAG 1.4.11: a control's frame against what is around it

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"),
    pytest.mark.timeout(300),
]
sync_api = pytest.importorskip("playwright.sync_api")
# test_browser.py's fixtures: the studio on the tiny model in a subprocess, and chromium.
studio_url = test_browser.studio_url
browser = test_browser.browser


def open_themed(browser, url: str, viewport: dict, theme: str | None = None, touch: bool = False):
    """A fresh browser context (no stored choice) at ``viewport``; ``theme`` stored first when given."""
    context = browser.new_context(viewport=viewport, has_touch=touch, is_mobile=touch)
    if theme is not None:
        context.add_init_script(f"localStorage.setItem('{THEME_STORAGE_KEY}', '{theme}')")
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#mode-nav", timeout=60_000)
    page.wait_for_timeout(1_500)  # the load events run just after the page appears
    return context, page


def open_panels(page) -> None:
    """Open every accordion shown and not opened yet (each is marked, so none closes again)."""
    for header in page.query_selector_all(".label-wrap:not([data-look-opened])"):  # handles: marking shifts nth
        if header.is_visible():
            header.evaluate("(e) => e.setAttribute('data-look-opened', '1')")
            header.click()
    page.wait_for_timeout(400)


def each_view(page):
    """Every mode tab (FlowEdit too) with its panels open; yields the view's name."""
    for mode in MODES:
        page.locator("#mode-nav label", has_text=mode).click()
        page.wait_for_timeout(400)
        open_panels(page)
        yield mode
        if mode == "Edit":
            page.locator("#edit-method label", has_text="FlowEdit").click()
            page.locator("#flow_edit-source_prompt").wait_for(state="visible")
            yield "Edit (FlowEdit)"


def report(found: dict[str, list[dict]], limit: int = 12) -> str:
    rows = [f"{view}: {item}" for view, items in found.items() for item in items[:limit]]
    return "\n".join(rows[:limit])


def test_the_default_theme_is_dark(browser, studio_url):
    context, page = open_themed(browser, studio_url, DESKTOP)
    try:
        assert page.evaluate(IS_DARK_JS), "a browser with no stored choice sees the dark theme"
        background = page.evaluate("getComputedStyle(document.querySelector('.gradio-container')).backgroundColor")
        shade = sum(int(v) for v in background[background.index("(") + 1 : -1].split(",")[:3]) / 3
        assert shade < 40, f"the page's background is dark, got {background}"
    finally:
        context.close()


def test_the_light_choice_survives_a_reload(browser, studio_url):
    context, page = open_themed(browser, studio_url, DESKTOP)
    try:
        page.locator("#theme-toggle").click()
        page.wait_for_function("() => !document.body.classList.contains('dark')", timeout=5_000)
        page.reload()
        page.wait_for_selector("#mode-nav", timeout=60_000)
        page.wait_for_timeout(1_500)  # long enough for Gradio to apply the OS's choice, were it to win
        assert not page.evaluate(IS_DARK_JS), "the light theme is remembered after a reload"
        page.locator("#theme-toggle").click()
        page.reload()
        page.wait_for_selector("#mode-nav", timeout=60_000)
        page.wait_for_timeout(1_500)
        assert page.evaluate(IS_DARK_JS), "switching back to dark is remembered too"
    finally:
        context.close()


@pytest.mark.parametrize("theme", THEMES)
def test_every_visible_text_meets_wcag_aa_contrast(browser, studio_url, theme):
    context, page = open_themed(browser, studio_url, DESKTOP, theme)
    try:
        assert page.evaluate(IS_DARK_JS) == (theme == "dark")
        found, checked = {}, 0
        for view in each_view(page):
            result = page.evaluate(CONTRAST_JS, MIN_CONTRAST)
            checked += result["checked"]
            if result["worst"]:
                found[view] = result["worst"]
        print(f"{theme}: {checked} texts checked")
        assert checked > 200, "the probe saw the page's text"
        assert not found, f"text under {MIN_CONTRAST}:1 in the {theme} theme, worst first:\n{report(found)}"
    finally:
        context.close()


@pytest.mark.parametrize("theme", THEMES)
def test_every_control_is_at_least_44_px_on_a_phone(browser, studio_url, theme):
    context, page = open_themed(browser, studio_url, PHONE, theme, touch=True)
    try:
        found, checked = {}, 0
        for view in each_view(page):
            assert overflow(page) <= 0, f"{view}: the page is wider than the phone"
            result = page.evaluate(TAP_TARGETS_JS, MIN_TAP_PX)
            checked += result["checked"]
            if result["small"]:
                found[view] = result["small"]
        print(f"{theme}: {checked} controls measured")
        assert checked > 100, "the probe saw the page's controls"
        assert not found, f"controls under {MIN_TAP_PX} px on a phone ({theme}), smallest first:\n{report(found)}"
    finally:
        context.close()


def test_the_mode_strip_shows_that_it_scrolls_on_a_phone(browser, studio_url):
    context, page = open_themed(browser, studio_url, PHONE, touch=True)
    try:
        strip = page.evaluate(
            "() => { const l = document.querySelector('#mode-nav label').parentElement;"
            " return [l.scrollWidth, l.clientWidth]; }"
        )
        assert strip[0] > strip[1], "the five modes do not fit 412 px: the strip scrolls"
        hint = page.evaluate("getComputedStyle(document.querySelector('.studio-sidebar'), '::after').content")
        assert hint not in ("none", "normal", ""), "an arrow over a fade marks the strip's right edge"
    finally:
        context.close()


BUTTONS_JS = """
() => {
  const style = (name) => {
    const b = [...document.querySelectorAll('button')].find((e) => e.innerText.trim() === name);
    const s = getComputedStyle(b);
    return {background: s.backgroundColor, color: s.color, border: s.borderTopColor};
  };
  return {primary: style('Generate'), secondary: style('Retake'), destructive: style('Cancel')};
}
"""

FRAME_CONTRAST_JS = """
(selector) => {
  const lum = (c) => {
    const [r, g, b] = c.match(/[\\d.]+/g).slice(0, 3).map(Number).map((v) => {
      v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const box = document.querySelector(selector);
  let node = box.parentElement, bg = 'rgba(0, 0, 0, 0)';
  while (node && bg === 'rgba(0, 0, 0, 0)') { bg = getComputedStyle(node).backgroundColor; node = node.parentElement; }
  const [l1, l2] = [lum(getComputedStyle(box).borderTopColor), lum(bg)].sort((a, b) => b - a);
  return (l1 + 0.05) / (l2 + 0.05);
}
"""


@pytest.mark.parametrize("theme", THEMES)
def test_buttons_read_as_what_they_do_and_unticked_boxes_show(browser, studio_url, theme):
    context, page = open_themed(browser, studio_url, DESKTOP, theme)
    try:
        buttons = page.evaluate(BUTTONS_JS)
        primary, secondary, destructive = buttons["primary"], buttons["secondary"], buttons["destructive"]
        assert primary["background"] != secondary["background"], "primary is filled, secondary is not"
        assert secondary["border"] == secondary["color"], f"secondary is framed in the text colour: {secondary}"
        assert destructive["color"] not in (primary["color"], secondary["color"]), f"destructive stands out: {buttons}"
        page.locator("#generate-instrumental input").uncheck()
        frame = page.evaluate(FRAME_CONTRAST_JS, "#generate-instrumental input[type=checkbox]")
        assert frame >= MIN_UI_CONTRAST, f"an unticked box's frame is {frame:.2f}:1 against the page"
    finally:
        context.close()


def test_controls_follow_the_order_of_use_and_turbo_hides_guidance(browser, studio_url):
    context, page = open_themed(browser, studio_url, DESKTOP)
    try:
        page.get_by_text("Advanced", exact=True).first.click()
        page.locator("#num_inference_steps").wait_for(state="visible")
        assert not page.locator("#guidance_scale").is_visible(), "the tiny model is turbo: guidance does nothing"
        assert not page.locator("#cfg_interval_start").is_visible()
        page.get_by_text("LoRA", exact=True).first.click()
        page.locator("#loras").wait_for(state="visible")
        top = [
            page.get_by_label("1. Pick one of your LoRAs").bounding_box()["y"],
            page.get_by_text("2. Its weight").first.bounding_box()["y"],
            page.get_by_role("button", name="3. Add to the stack").bounding_box()["y"],
            page.locator("#loras").bounding_box()["y"],
        ]
        assert top == sorted(top), f"the LoRA panel reads top-down in the order of use: {top}"
        clear = page.get_by_role("button", name="Clear the stack")
        assert clear.evaluate("(e) => e.className").find("stop") >= 0, "clearing the stack is marked destructive"
        page.locator("#mode-nav label", has_text="Edit").click()
        page.locator("#edit-method label", has_text="FlowEdit").click()
        page.locator("#flow_edit-source_prompt").wait_for(state="visible")
        now = page.locator("#flow_edit-source_prompt").bounding_box()["y"]
        should_be = page.locator("#edit-prompt").bounding_box()["y"]
        assert now < should_be, "FlowEdit's style as it is now comes before the style it should become"
    finally:
        context.close()


@pytest.mark.parametrize("theme", THEMES)
def test_first_screen_screenshots(browser, studio_url, theme):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name, viewport, touch in (("desktop", DESKTOP, False), ("phone", PHONE, True)):
        context, page = open_themed(browser, studio_url, viewport, theme, touch=touch)
        try:
            path = SCREENSHOTS / f"first-screen-{theme}-{name}.png"
            page.screenshot(path=str(path))
            assert path.stat().st_size > 10_000, f"{path} holds a picture"
        finally:
            context.close()


def measured(page, scopes: tuple[str, ...], phone: bool) -> dict[str, list]:
    """Text under AA contrast, and (on the phone) controls under 44 px, inside each of ``scopes``."""
    found: dict[str, list] = {}
    for scope in scopes:
        result = page.evaluate(CONTRAST_JS, [MIN_CONTRAST, scope])
        assert result["checked"] > 0, f"the probe saw text in {scope}"
        found |= {f"{scope} contrast": result["worst"]} if result["worst"] else {}
        if phone:
            small = page.evaluate(TAP_TARGETS_JS, [MIN_TAP_PX, scope])["small"]
            found |= {f"{scope} size": small} if small else {}
    return found


BAR_JS = """
() => {
  const bar = document.querySelector('#action-bar').getBoundingClientRect();
  window.scrollTo(0, document.documentElement.scrollHeight);
  const below = [...document.querySelectorAll('.studio-body, footer')].map((e) => e.getBoundingClientRect().bottom);
  return {bar: Math.round(bar.height), padding: parseFloat(getComputedStyle(document.body).paddingBottom),
          top: document.querySelector('#action-bar').getBoundingClientRect().top, ends: below};
}
"""


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("theme", THEMES)
def test_a_run_and_its_take_meet_the_look(browser, studio_url, theme, size):
    """The action bar while a run goes (its stage line, Cancel) and the finished take's area (players,
    downloads, Vary, Share): AA contrast, 44 px on the phone, every control named, and the fixed bar
    covering nothing at the end of the page. Screenshots of both moments."""
    phone = size == "phone"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context, page = open_themed(browser, studio_url, SIZES[size], theme, touch=phone)
    try:
        start_run(page, f"{theme} {size} look song", seconds=30)  # long enough to catch a stage
        wait_for_stage(page, "Encoding|Denoising|Decoding|Mastering|Writing", timeout=120_000)
        assert STAGE.search(page.locator("#run-progress").inner_text())
        found = measured(page, ("#action-bar",), phone)
        page.screenshot(path=str(SCREENSHOTS / f"run-in-progress-{theme}-{size}.png"))
        page.locator("#take1 audio, #take1 [data-testid]").first.wait_for(state="attached", timeout=120_000)
        test_browser.sync_api.expect(page.locator("#run-progress")).to_contain_text("Done", timeout=30_000)
        page.wait_for_timeout(1_000)  # the scroll to the take
        page.screenshot(path=str(SCREENSHOTS / f"result-{theme}-{size}.png"))
        found |= measured(page, ("#action-bar", ".studio-takes"), phone)
        links = page.evaluate(test_browser.DOWNLOAD_LINKS_JS)
        assert len({(link["left"], link["width"]) for link in links}) == 1, f"the downloads line up: {links}"
        assert not found, f"the run's bar and take in the {theme} theme on the {size}:\n{report(found)}"
        names = page.evaluate(NAMES_JS, None)
        assert names["checked"] > 50 and not names["unnamed"], f"controls with no accessible name: {names['unnamed']}"
        assert "switch to the" in page.locator("#theme-toggle").get_attribute("aria-label")
        bar = page.evaluate(BAR_JS)
        assert bar["padding"] >= bar["bar"] > 0, f"the page keeps the bar's height free at its end: {bar}"
        assert max(bar["ends"]) <= bar["top"] + 1, f"scrolled to the end, nothing lies under the bar: {bar}"
        page.screenshot(path=str(SCREENSHOTS / f"result-end-{theme}-{size}.png"))
    finally:
        context.close()


def test_optional_numbers_start_empty_and_a_run_sends_them_empty(browser, studio_url):
    """BPM and Cover's duration show empty (not 0) on a fresh page and after Apply settings of a run
    that left them empty; the run's settings.json holds null for them."""
    context, page = open_themed(browser, studio_url, DESKTOP)
    try:
        page.get_by_text("Advanced", exact=True).first.click()
        bpm = page.locator("#bpm input[type=number]")
        assert bpm.input_value() == "", "BPM: empty = the model chooses"
        for mode in ("Cover", "Generate", "Cover"):  # and still empty after the tab was left
            page.locator("#mode-nav label", has_text=mode).click()
            page.wait_for_timeout(300)
        assert page.locator("#cover-audio_duration input[type=number]").input_value() == ""
        page.get_by_text("LoRA", exact=True).first.click()
        alpha = page.get_by_label("Its lora_alpha (optional)")
        assert alpha.input_value() == "", "a LoRA's alpha: empty = read from its config"
        page.locator("#mode-nav label", has_text="Generate").click()
        start_run(page, "empty numbers song")
        test_browser.sync_api.expect(page.locator("#run-progress")).to_contain_text("Done", timeout=120_000)
        page.get_by_text("Settings", exact=True).first.click()
        settings = page.locator("#settings_text .cm-content")
        test_browser.sync_api.expect(settings).to_contain_text('"bpm": null', timeout=10_000)
        bpm.fill("120")
        page.get_by_role("button", name="Apply settings").click()
        test_browser.sync_api.expect(bpm).to_have_value("", timeout=10_000)
        assert page.locator("#generate-audio_duration input[type=number]").input_value() == "10"
    finally:
        context.close()
