"""Repair by line: flagged lines to repaint windows, sections to time spans, and a repair run on
the tiny model that changes only the flagged window and is checked again."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from backend import RunControl
from lyrics_check.align import Word, align, lyric_lines
from lyrics_check.check import LyricsChecker
from lyrics_check.repair import (
    NOTHING_TO_REPAIR,
    flagged_windows,
    lyrics_of,
    pick_choices,
    picked_lines,
    repair,
    repair_request,
    section_span,
)
from modes import EditRequest
from outputs import SETTINGS_FILE
from rework import SPLICE_FADE_S
from tests.lyrics_speech import PocketSphinxRecogniser, SpeechOnly, speak
from tests.test_lyrics_check import LINES, LYRICS, _save, _timed

SR = 48_000


def _results(sung: dict[int, float]) -> list:
    """LYRICS' four lines, line n heard from ``sung[n]`` seconds (2 s long); the others not heard."""
    heard: list[Word] = []
    for number, start in sorted(sung.items(), key=lambda item: item[1]):
        heard += _timed(LINES[number - 1], start, step=0.4)
    return align(lyric_lines(LYRICS), heard)


def test_a_missing_line_is_re_made_over_the_gap_between_its_neighbours():
    results = _results({1: 0.0, 2: 3.0, 4: 9.0})
    [window] = flagged_windows(results, duration_s=12.0)
    assert (window.lines, window.start, window.end) == ((3,), results[1].end, 9.0)


def test_neighbouring_flagged_lines_share_one_window_and_the_last_runs_to_the_end():
    results = _results({1: 0.0})
    [window] = flagged_windows(results, duration_s=12.0)
    assert (window.lines, window.start, window.end) == ((2, 3, 4), results[0].end, 12.0)
    assert flagged_windows(_results({1: 0.0, 2: 3.0, 3: 6.0, 4: 9.0}), 12.0) == []


def test_a_short_gap_is_widened_to_the_shortest_edit():
    results = _results({1: 0.0, 2: 2.0, 4: 2.2 + 2.0})  # line 3 missing in a 0.2 s gap
    [window] = flagged_windows(results, duration_s=12.0)
    assert window.end - window.start == pytest.approx(1.0) and window.start < results[1].end


def test_a_section_maps_to_the_span_its_lines_were_heard_in():
    lyrics = "[verse]\nwalking down the morning street\n[chorus]\nwe sing together all night long\n"
    lyrics += "[verse]\nthe city hums beneath my feet\n[chorus]\nwe sing together all night long\n"
    heard = _timed("walking down the morning street", 0.0) + _timed("we sing together all night long", 3.0)
    heard += _timed("the city hums beneath my feet", 6.0) + _timed("we sing together all night long", 9.0)
    results = align(lyric_lines(lyrics), heard)
    assert section_span(results, "chorus 2") == (9.0, results[3].end)
    assert section_span(results, "Verse 1") == (0.0, results[0].end)
    with pytest.raises(ValueError, match="no section called 'bridge'; this take has Verse 1, Chorus 1, Verse 2"):
        section_span(results, "bridge")


def test_the_repair_request_keeps_the_runs_style_and_sings_only_the_flagged_lines():
    results = _results({1: 0.0, 2: 3.0, 4: 9.0})
    settings = {"request": {"prompt": "dream pop", "lyrics": LYRICS, "instrumental": False, "shift": 3.0},
                "takes": [{"seed": 41}]}  # fmt: skip
    [window] = flagged_windows(results, 12.0)
    request = repair_request(settings, "take1.wav", window, results)
    assert isinstance(request, EditRequest) and request.prompt == "dream pop" and request.shift == 3.0
    assert request.lyrics == "[chorus]\nwe sing together all night long" and request.seed == 42
    assert (request.repainting_start, request.repainting_end) == (round(window.start, 3), 9.0)


def test_repair_changes_only_the_flagged_window_and_checks_again(studio):
    spoken = [LINES[0], LINES[1], LINES[3]]
    run_id = _save(studio.store, speak(spoken))
    checker = LyricsChecker(studio.store, PocketSphinxRecogniser(), SpeechOnly())
    first = checker.check(run_id, 1, RunControl())
    assert [r.status for r in first.lines] == ["sung", "sung", "missing", "sung"]
    again = repair(studio, checker, first, RunControl())
    assert again.run_id != run_id and [r.line.number for r in again.lines] == [1, 2, 3, 4]
    [window] = flagged_windows(first.lines, 100.0)
    before = sf.read(studio.store.run_folder(run_id) / "take1.wav", dtype="float32", always_2d=True)[0]
    after = sf.read(studio.store.run_folder(again.run_id) / "take1.wav", dtype="float32", always_2d=True)[0]
    fade = round(SPLICE_FADE_S * SR)
    start, end = round(window.start * SR), round(window.end * SR)
    assert after.shape == before.shape
    assert np.array_equal(after[: start - fade], before[: start - fade])
    assert np.array_equal(after[end + fade :], before[end + fade :])
    assert not np.array_equal(after[start:end], before[start:end])
    saved = json.loads((studio.store.run_folder(again.run_id) / SETTINGS_FILE).read_text(encoding="utf-8"))
    assert saved["request"]["lyrics"] == "[chorus]\nwe sing together all night long"
    assert len(saved["lyrics_check"]["take1"]["lines"]) == 4  # checked against the whole song
    with pytest.raises(ValueError, match=NOTHING_TO_REPAIR):
        repair(studio, checker, checker.check(run_id, 1, RunControl(), lyrics="\n".join(spoken)), RunControl())


def test_edit_by_line_maps_picks_to_lines_and_windows_keep_the_other_lines():
    results = _results({1: 0.0, 2: 3.0, 3: 6.0, 4: 9.0})
    assert picked_lines(results, ["Chorus"]) == [3, 4]
    assert picked_lines(results, ["2", "Line 1: walking down", "verse"]) == [1, 2]
    with pytest.raises(ValueError, match="no line or section called 'bridge'; this take has lines 1 to 4 and Verse"):
        picked_lines(results, ["bridge"])
    assert pick_choices(results)[:3] == ["Verse", "Chorus", "Line 1: walking down the morning street"]
    [window] = flagged_windows(results, 12.0, chosen={2})  # a sung line re-made between its neighbours
    assert (window.lines, window.start, window.end) == ((2,), results[0].end, 6.0)
    assert lyric_lines(lyrics_of(results)) == lyric_lines(LYRICS)  # what a repaired take is checked against


def test_a_saved_check_comes_back_as_it_was_recorded(tmp_path):
    from lyrics_check.check import saved_check
    from outputs import OutputStore

    store = OutputStore(tmp_path)
    run_id = _save(store, speak(LINES[:2]))
    check = LyricsChecker(store, PocketSphinxRecogniser(), SpeechOnly()).check(run_id, 1, RunControl())
    saved = saved_check(store, run_id, 1)
    assert saved is not None and saved.lrc_path == check.lrc_path and saved.sung_share == check.sung_share
    assert [(r.line, r.status, r.wer) for r in saved.lines] == [(r.line, r.status, r.wer) for r in check.lines]
    assert saved_check(store, run_id, 2) is None
