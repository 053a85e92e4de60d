"""The lyrics check in chromium: a tiny take checked from its panel shows the table, and the
karaoke highlight follows the take's player as its playhead moves.

The tiny Whisper hears gibberish (no line would be timed), so this studio's ears are injected
through its constructor: they hear each lyric line, 2 s apart. The page, its events, the saved
LRC and the JS are the studio's own.
"""

from __future__ import annotations

import shutil

import pytest
from test_app import free_port

import app
from lyrics_check.align import Word, lyric_lines
from outputs import OutputStore
from studio import Studio
from tests.lyrics_speech import SpeechOnly

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LINE_S = 2.0  # each lyric line "heard" this long after the one before
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"),
    pytest.mark.timeout(300),
]
sync_api = pytest.importorskip("playwright.sync_api")
LYRICS = "[verse]\nwalking down the street\nthe city hums\n[chorus]\nwe sing all night\nand I feel the rain"
# Gradio's waveform player keeps its <audio> in a shadow root under the take's element.
SEEK_JS = """(t) => {
  for (const node of document.getElementById('take1').querySelectorAll('*')) {
    const media = node.shadowRoot && node.shadowRoot.querySelector('audio');
    if (media) { media.currentTime = t; return true; }
  }
  return false;
}"""
HIGHLIGHTED_JS = "() => [...document.querySelectorAll('#lyrics-check-table tr.karaoke-now')].map(r => r.dataset.t)"


class LineByLine:
    """Ears that hear every lyric line as written, ``LINE_S`` apart."""

    def words(self, audio, lyrics, control):
        return [
            Word(word, LINE_S * k + 0.3 * i, LINE_S * k + 0.3 * i + 0.25)
            for k, line in enumerate(lyric_lines(lyrics))
            for i, word in enumerate(line.words)
        ]


@pytest.fixture(scope="module")
def studio_url(tiny_backend, tmp_path_factory):
    store = OutputStore(tmp_path_factory.mktemp("outputs"))
    studio = Studio(backend=tiny_backend, store=store, speech=LineByLine(), splitter=SpeechOnly())
    port = free_port()
    demo = app.launch(studio, "127.0.0.1", port, preload=False, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_the_check_shows_its_table_and_the_highlight_follows_the_player(studio_url):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(studio_url)
        page.locator("#generate-lyrics textarea").fill(LYRICS)
        page.locator("#generate-audio_duration input[type=number]").fill("10")
        page.click("#generate")
        page.wait_for_function("() => !document.querySelector('#check-lyrics').disabled", timeout=120_000)
        page.click("#check-lyrics")
        rows = page.locator("#lyrics-check-table tr.lyric-row")
        rows.first.wait_for(timeout=120_000)
        assert rows.count() == 4 and "Lines sung: 100%" in page.locator("#lyrics-check-table").inner_text()
        assert page.locator("#lyrics-check-table tr[data-t]").count() == 4
        for seconds, line_time in ((4.5, "4.00"), (1.0, "0.00"), (6.2, "6.00")):
            page.wait_for_function(f"() => ({SEEK_JS})({seconds})", timeout=30_000)
            page.wait_for_function(f"() => ({HIGHLIGHTED_JS})().join() === '{line_time}'", timeout=10_000)
            assert page.evaluate(HIGHLIGHTED_JS) == [line_time]
        browser.close()
