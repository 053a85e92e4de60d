"""The main loop in a real browser (chromium, playwright) at 1440x900 and 412x915: Generate in
the first screen, a run's stage beside it and its take in view, a reload mid-run that finds the
run, and each refusal read in words on the page. Reuses ``test_browser``'s studio and browser.

Screenshots (first screen, run in progress, result; both sizes) go to ``$ACE_STUDIO_ARTIFACTS``.
"""

from __future__ import annotations

import re

import pytest
from test_browser import (  # noqa: F401  (fixtures)
    CHROMIUM,
    DESKTOP,
    PHONE,
    browser,
    open_page,
    shot,
    studio_url,
    sync_api,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"),
    pytest.mark.timeout(300),
]
SIZES = {"desktop": DESKTOP, "phone": PHONE}
STAGE = re.compile(r"Waiting for its turn|Loading the model|Encoding|Denoising|Decoding|Mastering|Writing files")


def in_viewport(page, selector: str) -> bool:
    box = page.locator(selector).first.bounding_box()
    size = page.viewport_size
    return box is not None and box["y"] >= 0 and box["y"] + min(box["height"], 40) <= size["height"]


def viewport_shot(page, name: str) -> None:
    """The screen as the user sees it (not the whole page)."""
    from test_browser import ARTIFACTS

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(1_000)  # the page's own loading marks fade
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def start_run(page, prompt: str, seconds: int = 10) -> None:
    """A short run without planning (the tiny planner would write 5 codes a second)."""
    page.locator("#generate-think input").uncheck()
    page.locator("#generate-prompt textarea").fill(prompt)
    duration = page.locator("#generate-audio_duration input[type=number]")
    duration.fill(str(seconds))
    duration.press("Enter")
    page.locator("#generate").click()


def wait_for_stage(page, pattern: str, timeout: int) -> None:
    """Until the run's current stage (the line's first bold word, not the list of stages) matches."""
    now = "(document.querySelector('#run-progress strong')?.innerText ?? '')"
    page.wait_for_function(f"() => /{pattern}/.test({now})", timeout=timeout)


def progress_text(page) -> str:
    return page.locator("#run-progress").inner_text()


def test_generate_prompt_and_lyrics_share_the_first_desktop_screen(browser, studio_url):  # noqa: F811
    context, page = open_page(browser, studio_url, DESKTOP)
    try:
        for selector in ("#generate", "#retake", "#cancel", "#generate-prompt textarea", "#generate-lyrics label"):
            assert in_viewport(page, selector), f"{selector} is outside the first 1440x900 screen"
        assert not page.locator("#take1").is_visible(), "no empty player before there is a take"
        assert page.locator("#vary").is_disabled(), "Vary waits for a run to vary"
        viewport_shot(page, "loop-desktop-first-screen")
    finally:
        context.close()


@pytest.mark.parametrize("size", SIZES)
def test_a_run_shows_its_stage_beside_the_buttons_then_the_take_in_view(browser, studio_url, size):  # noqa: F811
    context, page = open_page(browser, studio_url, SIZES[size])
    try:
        viewport_shot(page, f"loop-{size}-first-screen")
        assert in_viewport(page, "#generate"), "Generate is on the first screen"
        start_run(page, f"{size} loop song", seconds=30)  # long enough to catch a stage
        wait_for_stage(page, "Encoding|Denoising|Decoding|Mastering|Writing", timeout=120_000)
        text = progress_text(page)
        assert STAGE.search(text), text
        assert "%" not in text, "one number per stage, no percentage"
        assert in_viewport(page, "#run-progress"), "the stage shows beside the buttons"
        viewport_shot(page, f"loop-{size}-in-progress")
        page.locator("#take1 audio, #take1 [data-testid]").first.wait_for(state="attached", timeout=120_000)
        sync_api.expect(page.locator("#run-progress")).to_contain_text("Done", timeout=30_000)
        page.wait_for_timeout(800)  # the scroll to the take
        assert in_viewport(page, "#take1"), "the finished take is where the user looks"
        viewport_shot(page, f"loop-{size}-result")
    finally:
        context.close()


def test_a_reload_during_a_run_finds_the_run_and_its_take(browser, studio_url):  # noqa: F811
    context, page = open_page(browser, studio_url, DESKTOP)
    try:
        start_run(page, "reloaded song", seconds=20)
        wait_for_stage(page, "Encoding|Denoising|Decoding|Mastering|Writing", timeout=120_000)
        page.reload()
        page.wait_for_selector("#mode-nav")
        wait_for_stage(page, "Denoising|Decoding|Mastering|Writing|Done", timeout=60_000)
        viewport_shot(page, "loop-desktop-reloaded-in-progress")
        page.locator("#take1 audio, #take1 [data-testid]").first.wait_for(state="attached", timeout=120_000)
        sync_api.expect(page.locator("#run-summary")).to_contain_text("Saved", timeout=30_000)
        page.get_by_text("History (this browser)").click()
        page.locator("#history-pick input").click()
        assert page.get_by_role("option", name="reloaded song").count() >= 1, "the run is in History"
        viewport_shot(page, "loop-desktop-reloaded-result")
    finally:
        context.close()


@pytest.mark.parametrize("reload", [False, True], ids=["same-page", "reattached"])
def test_the_take_never_yanks_a_page_the_user_has_scrolled(browser, studio_url, reload):  # noqa: F811
    """The take is scrolled into view only when the user has not moved the page since the run began
    (or since a reload reattached it): a user who scrolled stays where they are."""
    context, page = open_page(browser, studio_url, PHONE)
    try:
        start_run(page, f"unyanked song {reload}", seconds=20)
        wait_for_stage(page, "Encoding|Denoising|Decoding|Mastering|Writing", timeout=120_000)
        if reload:
            page.reload()
            page.wait_for_selector("#mode-nav")
            wait_for_stage(page, "Denoising|Decoding|Mastering|Writing|Done", timeout=60_000)
        start = page.evaluate("window.scrollY")
        page.mouse.move(200, 300)
        page.mouse.wheel(0, 240)  # the user reads on, below the form's top
        page.wait_for_function(f"() => window.scrollY >= {start} + 200", timeout=5_000)
        page.wait_for_timeout(500)  # the wheel's smooth scroll settles
        before = page.evaluate("window.scrollY")
        page.locator("#take1 audio, #take1 [data-testid]").first.wait_for(state="attached", timeout=120_000)
        sync_api.expect(page.locator("#run-progress")).to_contain_text("Done", timeout=30_000)
        page.wait_for_timeout(1_500)  # when the page would have scrolled to the take
        assert abs(page.evaluate("window.scrollY") - before) < 5, "the page stays where the user put it"
        assert not in_viewport(page, "#take1"), "the take is below, where the user has not gone yet"
        assert not page.evaluate("window.aceStudioLoop.showTake()"), "moved once, the page is not yanked"
    finally:
        context.close()


def error_text(page, pattern: str) -> str:
    """The first toast (or page text) matching ``pattern``, read from the page."""
    found = page.get_by_text(re.compile(pattern)).first
    found.wait_for(timeout=30_000)
    return found.inner_text()


# Gradio's bare red "Error" badge (a failed event's status over its outputs), or anything else marked
# as an error outside the toasts that carry the words.
BARE_ERRORS_JS = """
() => [...document.querySelectorAll('.error, [data-testid=status-tracker] .error')].filter((e) => {
  if (e.closest('[data-testid^=toast]')) return false;
  const r = e.getBoundingClientRect();
  return r.width > 1 && r.height > 1 && e.checkVisibility({opacityProperty: true, visibilityProperty: true});
}).map((e) => e.outerHTML.slice(0, 120))
"""


def close_toasts(page) -> None:
    for close in page.locator("[data-testid=toast-close]").all():
        close.click()


def test_each_refusal_is_shown_in_words(browser, studio_url):  # noqa: F811
    context, page = open_page(browser, studio_url, DESKTOP)
    try:
        page.get_by_text("LoRA", exact=True).first.click()
        page.get_by_role("button", name="Add to the stack").click()
        assert "Pick one of your LoRAs first" in error_text(page, "Pick one of your LoRAs first")
        assert not page.evaluate(BARE_ERRORS_JS), "no red Error badge without words"
        close_toasts(page)
        page.locator("#generate-think input").uncheck()
        page.locator("#generate-prompt textarea").fill("a typed number")
        page.get_by_text("Advanced", exact=True).last.click()
        steps = page.locator("#num_inference_steps input[type=number]")
        steps.fill("5000")  # typed, not dragged
        page.locator("#generate").click()
        words = error_text(page, r"Steps: must be between")
        assert "between 1 and 200, got 5000" in words, f"refused with the range, not clamped: {words}"
        sync_api.expect(page.locator("#run-progress")).to_contain_text("Failed · Steps: must be between 1 and 200")
        assert steps.input_value() == "5000", "what the user typed stays to be put right"
        assert not page.locator("#take1").is_visible(), "no run started"
        assert not page.evaluate(BARE_ERRORS_JS), "no red Error badge without words"
        steps.fill("8")
        close_toasts(page)
        page.locator("#generate-prompt textarea").fill("bossa nova")
        duration = page.locator("#generate-audio_duration input[type=number]")
        duration.fill("5000")
        duration.press("Enter")
        page.locator("#generate").click()
        words = error_text(page, r"Duration: must be between")
        assert "10 and 600" in words, "refused with the range, not clamped"
        duration.fill("10")
        duration.press("Enter")
        close_toasts(page)
        page.locator("#action-bar").evaluate("e => e.scrollIntoView()")
        bpm = page.locator("#bpm input")
        bpm.fill("5000")
        bpm.press("Enter")
        page.get_by_role("button", name="Share link").click()
        words = error_text(page, r"BPM: must be between")
        assert "bpm" not in words and "30" in words and "300" in words, words
        assert not page.evaluate(BARE_ERRORS_JS), "no red Error badge without words"
        shot(page, "loop-desktop-error-share")
        other = context.new_page()
        other.goto(studio_url.rstrip("/") + "/?mode=generate&prompt=bossa&seed=99999999999")
        other.wait_for_selector("#mode-nav")
        words = error_text(other, "This link's settings could not be used")
        assert "Seed: must be between 0 and 4,294,967,295" in words, words
        shot(other, "loop-desktop-error-link")
    finally:
        context.close()


def test_stems_error_is_shown_whole_and_lyrics_can_be_put_back(browser, studio_url):  # noqa: F811
    context, page = open_page(browser, studio_url, DESKTOP)
    try:
        start_run(page, "stems song")
        page.locator("#take1 audio, #take1 [data-testid]").first.wait_for(state="attached", timeout=120_000)
        page.get_by_text("Stems", exact=True).first.click()
        page.get_by_role("button", name="Split into stems").click()
        words = error_text(page, "htdemucs")
        print("stems error:", words)
        assert not words.rstrip().endswith("("), f"the message is cut at its markup: {words!r}"
        shot(page, "loop-desktop-error-stems")
        lyrics = page.locator("#generate-lyrics textarea")
        lyrics.fill("[verse]\nmy own words")
        page.locator("#generate-prompt textarea").fill("a night train")
        page.locator("#write-for-me").click()
        page.locator("#lyrics-undo").wait_for(state="visible", timeout=30_000)
        page.wait_for_function(
            "() => !document.querySelector('#generate-lyrics textarea').value.includes('my own words')",
            timeout=120_000,
        )
        page.wait_for_timeout(3_000)  # the writer streams: let it finish before putting the words back
        page.locator("#lyrics-undo").click()
        sync_api.expect(lyrics).to_have_value("[verse]\nmy own words", timeout=10_000)
    finally:
        context.close()
