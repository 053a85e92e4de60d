"""The studio in a real browser: Debian's chromium driven by playwright against
``python app.py --model tiny``, at desktop (1440x900) and phone (412x915) sizes.

Screenshots go to ``$ACE_STUDIO_ARTIFACTS`` (default ``test-artifacts/``). Skipped, with
the reason, when chromium or playwright is missing; ``.ci/run`` installs both.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("ACE_STUDIO_ARTIFACTS", ROOT / "test-artifacts"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 412, "height": 915}
MIN_TAP_PX = 44
MIN_CONTRAST = 4.5  # WCAG AA for body text

pytestmark = [
    pytest.mark.slow,  # a studio subprocess and chromium; .ci/run runs them
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"),
    pytest.mark.timeout(300),
]
sync_api = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def studio_url(cache_dir, tmp_path_factory):
    port = _free_port()
    outputs = tmp_path_factory.mktemp("browser-outputs")
    env = {**os.environ, "ACE_STUDIO_CACHE": str(cache_dir), "GRADIO_ANALYTICS_ENABLED": "False"}
    log = (tmp_path_factory.mktemp("log") / "app.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "app.py", "--model", "tiny", "--port", str(port), "--outputs", str(outputs)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            if server.poll() is not None:
                pytest.fail(f"app.py exited with {server.returncode}; see {log.name}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        yield chromium
        chromium.close()


def open_page(browser, url: str, viewport: dict, touch: bool = False):
    context = browser.new_context(viewport=viewport, has_touch=touch, is_mobile=touch)
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#mode-nav", timeout=60_000)
    page.wait_for_timeout(1_500)  # the load events (history, share link) run just after the page appears
    return context, page


def overflow(page) -> int:
    """How far the document is wider than the screen (0 when it fits)."""
    return page.evaluate("document.documentElement.scrollWidth - window.innerWidth")


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def generate(page, prompt: str, seconds: int = 10) -> None:
    page.locator("#generate-prompt textarea").fill(prompt)
    duration = page.locator("#generate-audio_duration input[type=number]")
    duration.fill(str(seconds))
    duration.press("Enter")
    page.get_by_role("button", name="Generate", exact=True).click()
    page.get_by_text("Saved", exact=False).first.wait_for(timeout=120_000)


DOWNLOAD_LINKS_JS = """
() => [...document.querySelectorAll('#downloads a[download]')].map((a) => {
  const r = a.getBoundingClientRect();
  return {name: a.getAttribute('download'), left: Math.round(r.left), width: Math.round(r.width),
          height: Math.round(r.height)};
})
"""


def test_generating_from_the_phone_layout_fits_the_screen(browser, studio_url):
    context, page = open_page(browser, studio_url, PHONE, touch=True)
    try:
        assert overflow(page) <= 0
        nav = page.locator("#mode-nav").bounding_box()
        form = page.locator("#generate-prompt").bounding_box()
        assert nav["y"] < form["y"], "the mode pills sit above the form on a phone"
        shot(page, "phone-before")
        generate(page, "phone test song")
        page.locator("#take1 audio, #take1 [data-testid]").first.wait_for(state="attached", timeout=30_000)
        assert overflow(page) <= 0, "a result must not push the page wider than the screen"
        shot(page, "phone-after")
        links = page.evaluate(DOWNLOAD_LINKS_JS)
        assert len(links) >= 4, f"the take's WAV, FLAC, MP3 and settings: {links}"
        assert len({(link["left"], link["width"]) for link in links}) == 1, f"the download links line up: {links}"
        small = [link for link in links if min(link["width"], link["height"]) < MIN_TAP_PX]
        assert not small, f"download links under {MIN_TAP_PX} px: {small}"
        for label in page.locator("#mode-nav label").all():
            box = label.bounding_box()
            assert box["height"] >= MIN_TAP_PX, f"mode pill {label.inner_text()!r} is {box['height']} px tall"
        for name in ("Generate", "Retake", "Cancel"):
            box = page.get_by_role("button", name=name, exact=True).bounding_box()
            assert box["height"] >= MIN_TAP_PX, f"{name} is {box['height']} px tall"
    finally:
        context.close()


def test_desktop_has_a_sidebar_beside_the_form_and_switches_modes(browser, studio_url):
    context, page = open_page(browser, studio_url, DESKTOP)
    try:
        nav = page.locator("#mode-nav").bounding_box()
        form = page.locator("#generate-prompt").bounding_box()
        assert nav["x"] + nav["width"] <= form["x"], "the sidebar sits left of the form"
        assert overflow(page) <= 0
        page.locator("#mode-nav label", has_text="Edit").click()
        page.locator("#edit-repainting_start").wait_for(state="visible")
        assert not page.locator("#generate-prompt").is_visible()
        shot(page, "desktop-edit")
    finally:
        context.close()


def test_a_history_entry_restores_its_settings_after_a_reload(browser, studio_url):
    context, page = open_page(browser, studio_url, DESKTOP)
    try:
        generate(page, "history test song", seconds=12)
        page.reload()
        page.wait_for_selector("#mode-nav")
        # The reloaded page reattaches to its run and shows the take again (scrolling it into view
        # once): wait for that before working further down the page.
        page.locator("#take1").wait_for(state="visible", timeout=30_000)
        page.wait_for_timeout(1_000)
        page.locator("#generate-prompt textarea").fill("something else")
        page.get_by_text("History (this browser)").click()
        page.locator("#history-pick input").click()
        page.get_by_role("option", name="history test song").first.click()
        page.locator("#history-restore").click()
        prompt = page.locator("#generate-prompt textarea")
        sync_api.expect(prompt).to_have_value("history test song", timeout=20_000)
        duration = page.locator("#generate-audio_duration input[type=number]")
        sync_api.expect(duration).to_have_value("12")
        shot(page, "desktop-history-restored")
    finally:
        context.close()


def test_a_share_link_fills_the_form(browser, studio_url):
    context, page = open_page(browser, studio_url, DESKTOP)
    try:
        page.locator("#mode-nav label", has_text="Extend").click()
        page.locator("#extend-prompt textarea").fill("bossa nova, nylon guitar")
        page.locator("#extend-lyrics textarea").fill("[verse]\nAdeus, Lisboa")
        page.get_by_role("button", name="Share link").click()
        link_box = page.locator("#share-link textarea, #share-link input").first
        sync_api.expect(link_box).to_have_value(lambda_value_pattern(studio_url), timeout=20_000)
        link = link_box.input_value()
        assert "mode=extend" in link and "src_audio" not in link
        other = context.new_page()
        other.goto(link)
        other.wait_for_selector("#mode-nav")
        sync_api.expect(other.locator("#extend-prompt textarea")).to_have_value(
            "bossa nova, nylon guitar", timeout=20_000
        )
        sync_api.expect(other.locator("#extend-lyrics textarea")).to_have_value("[verse]\nAdeus, Lisboa")
        assert other.locator("#mode-nav input[value=extend]").is_checked()
        shot(other, "desktop-share-link-opened")
    finally:
        context.close()


def lambda_value_pattern(url: str):
    import re

    return re.compile("^" + re.escape(url.rstrip("/")) + r"/?\?mode=")


CONTRAST_JS = """
(selector) => {
  const el = document.querySelector(selector);
  const lum = (c) => {
    const [r, g, b] = c.match(/[\\d.]+/g).slice(0, 3).map(Number).map((v) => {
      v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  let node = el, bg = 'rgba(0, 0, 0, 0)';
  while (node && (bg === 'rgba(0, 0, 0, 0)' || bg === 'transparent')) {
    bg = getComputedStyle(node).backgroundColor; node = node.parentElement;
  }
  if (bg === 'rgba(0, 0, 0, 0)') bg = 'rgb(255, 255, 255)';
  const [l1, l2] = [lum(getComputedStyle(el).color), lum(bg)].sort((a, b) => b - a);
  return (l1 + 0.05) / (l2 + 0.05);
}
"""


@pytest.mark.parametrize(
    "selector",
    ["#mode-nav label:has(input:checked)", "#mode-nav label:has(input:not(:checked))", ".studio-status code"],
)
def test_text_contrast_meets_wcag_aa(browser, studio_url, selector):
    context, page = open_page(browser, studio_url, DESKTOP)
    try:
        ratio = page.evaluate(CONTRAST_JS, selector)
        print(f"contrast {selector}: {ratio:.1f}:1")
        assert ratio >= MIN_CONTRAST, f"{selector} contrast {ratio:.2f}:1"
    finally:
        context.close()


def test_lyrics_tab_writes_and_hands_its_lyrics_to_generate_on_a_phone(browser, studio_url):
    context, page = open_page(browser, studio_url, PHONE)
    try:
        page.locator("#mode-nav label", has_text="Lyrics").click()
        page.locator("#lyrics-brief textarea").fill("a night train to Porto")
        assert not page.get_by_role("button", name="Generate", exact=True).is_visible(), "no song buttons here"
        page.locator("#lyrics-write").click()
        box = page.locator("#lyrics-text textarea")
        page.wait_for_function(
            "() => document.querySelector('#lyrics-text textarea').value.trim().length > 0", timeout=120_000
        )
        written = ""
        for _ in range(120):  # the text streams in: wait until it stops growing
            page.wait_for_timeout(1_500)
            if box.input_value() == written:
                break
            written = box.input_value()
        assert overflow(page) <= 0
        shot(page, "phone-lyrics")
        page.locator("#lyrics-use").click()
        page.locator("#generate-lyrics textarea").wait_for(state="visible")
        page.wait_for_timeout(500)
        assert page.locator("#generate-lyrics textarea").input_value() == written
    finally:
        context.close()


def test_planner_is_collapsed_and_flow_edit_is_the_edit_tabs_second_method(browser, studio_url):
    context, page = open_page(browser, studio_url, DESKTOP)
    try:
        assert page.locator("#generate-think").is_visible(), "Think is offered with the tiny planner"
        assert not page.locator("#generate-lm_temperature").is_visible(), "the Planner panel starts collapsed"
        page.locator("#mode-nav label", has_text="Edit").click()
        page.locator("#edit-method").wait_for(state="visible")
        assert not page.locator("#flow_edit-source_prompt").is_visible()
        page.locator("#edit-method label", has_text="FlowEdit").click()
        page.locator("#flow_edit-source_prompt").wait_for(state="visible")
        assert overflow(page) <= 0
        shot(page, "desktop-flow-edit")
    finally:
        context.close()


@pytest.fixture(scope="module")
def lora_file(cache_dir, tmp_path_factory):
    from diffusers import AceStepPipeline
    from test_lora_stack import lora_weights, write_lora

    from tools.tiny_model import ensure_tiny_model

    pipe = AceStepPipeline.from_pretrained(ensure_tiny_model(cache_dir))
    return write_lora(tmp_path_factory.mktemp("lora") / "shimmer.safetensors", lora_weights(pipe, seed=5))


def test_a_lora_is_checked_stacked_and_recorded_then_a_take_is_varied(browser, studio_url, lora_file):
    context, page = open_page(browser, studio_url, DESKTOP)
    try:
        page.get_by_text("LoRA", exact=True).first.click()
        page.locator("input[type=file][accept*='.safetensors']").set_input_files(str(lora_file))
        page.wait_for_timeout(1_500)
        page.get_by_role("button", name="Check and add").click()
        page.get_by_text("layers).", exact=False).first.wait_for(timeout=60_000)  # "Added … (rank 4, 3 layers)."
        page.get_by_role("button", name="Add to the stack").click()
        stack = page.locator("#loras textarea, #loras input").first
        page.wait_for_function(
            "() => { const e = document.querySelector('#loras textarea, #loras input');"
            " return e && e.value.includes(':1'); }",
            timeout=10_000,
        )
        key = stack.input_value().split(":")[0]
        shot(page, "desktop-lora")
        page.locator("#generate-think input").uncheck()
        generate(page, "stacked song")
        page.get_by_text("LoRAs: shimmer ×1", exact=False).first.wait_for(timeout=10_000)
        assert len(key) >= 8
        page.locator("#vary").click()
        page.get_by_text("A variation of", exact=False).first.wait_for(timeout=120_000)
        assert overflow(page) <= 0
    finally:
        context.close()
