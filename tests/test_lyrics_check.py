"""The lyrics check: alignment on real speech timings (espeak-ng + pocketsphinx), the LRC and the
tags, the tiny random Whisper end to end through from_pretrained, refusals and cancel."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backend import Cancelled, DeviceInfo, RunControl
from lyrics_check.align import Word, align, lyric_lines, normalise, sung_share
from lyrics_check.check import INSTRUMENTAL_MESSAGE, LyricsChecker, report_markdown
from lyrics_check.lrc import parse_lrc, stamp, to_lrc
from lyrics_check.recognise import (
    LARGE_SPEECH_MODEL,
    SMALL_SPEECH_MODEL,
    WhisperRecogniser,
    choose_speech_model,
    make_recogniser,
)
from outputs import SETTINGS_FILE, OutputStore
from stems import StemSplitter
from tests.lyrics_speech import PocketSphinxRecogniser, SpeechOnly, speak

LINES = [
    "walking down the morning street",
    "the city hums beneath my feet",
    "we sing together all night long",
    "and I can feel the summer rain",
]
LYRICS = "[verse]\n" + "\n".join(LINES[:2]) + "\n\n[chorus]\n" + "\n".join(LINES[2:]) + "\n"
DROPPED = 3  # 1-based: the line espeak-ng does not speak


def _save(store: OutputStore, audio: np.ndarray, lyrics: str = LYRICS, **request) -> str:
    settings = {"mode": "generate", "request": {"prompt": "spoken test", "lyrics": lyrics, **request}}
    return store.save_run(settings, [audio], [7]).run_id


def _timed(text: str, start: float, step: float = 0.4) -> list[Word]:
    return [Word(w, start + i * step, start + (i + 1) * step - 0.05) for i, w in enumerate(text.split())]


# ---- alignment on real timings


def test_real_speech_flags_the_dropped_line_and_times_rise(tmp_path):
    store = OutputStore(tmp_path)
    spoken = [line for number, line in enumerate(LINES, start=1) if number != DROPPED]
    run_id = _save(store, speak(spoken))
    recogniser = PocketSphinxRecogniser()
    progress: list[str] = []
    check = LyricsChecker(store, recogniser, SpeechOnly()).check(run_id, 1, RunControl(lambda f, m: progress.append(m)))
    statuses = {r.line.number: r.status for r in check.lines}
    assert statuses == {1: "sung", 2: "sung", 3: "missing", 4: "sung"}, [(r.line.text, r.wer) for r in check.lines]
    assert check.sung_share == 0.75 and recogniser.calls == 1
    starts = [r.start for r in check.lines if r.start is not None]
    assert starts == sorted(starts) and all(r.end > r.start for r in check.lines if r.start is not None)
    for r in check.lines:
        word_starts = [w.start for w in r.words]
        assert word_starts == sorted(word_starts)
    # The sections come from the tags, which are never sung.
    assert [r.line.section for r in check.lines] == ["verse", "verse", "chorus", "chorus"]
    parsed = parse_lrc(check.lrc_path.read_text(encoding="utf-8"))
    assert [line.text for line in parsed] == [LINES[0], LINES[1], "and I can feel the summer rain"]
    assert [line.time for line in parsed] == sorted(line.time for line in parsed)
    assert all(len(line.words) == len(line.text.split()) for line in parsed)
    saved = json.loads((store.run_folder(run_id) / SETTINGS_FILE).read_text(encoding="utf-8"))
    record = saved["lyrics_check"]["take1"]
    assert record["sung_share"] == 0.75 and record["lrc"] == "lyrics-take1/take1.lrc"
    assert [line["status"] for line in record["lines"]] == ["sung", "sung", "missing", "sung"]
    assert saved["request"]["lyrics"] == LYRICS  # the run as made is untouched
    assert "Separating the vocals…" in progress and "Done" in progress
    assert "**missing**" in report_markdown(check)


def test_the_timings_are_embedded_in_the_takes_tags(tmp_path):
    from mutagen.flac import FLAC
    from mutagen.id3 import ID3
    from mutagen.wave import WAVE

    store = OutputStore(tmp_path)
    run_id = _save(store, speak(LINES[:2]))
    check = LyricsChecker(store, PocketSphinxRecogniser(), SpeechOnly()).check(run_id, 1, RunControl())
    folder = store.run_folder(run_id)
    assert sorted(check.tagged) == ["take1.flac", "take1.mp3", "take1.wav"]
    sylt = ID3(folder / "take1.mp3").getall("SYLT")[0]
    times = [ms for _, ms in sylt.text]
    assert times == sorted(times) and "".join(text for text, _ in sylt.text).split() == " ".join(LINES[:2]).split()
    assert ID3(folder / "take1.mp3").getall("USLT")[0].text == LYRICS  # the plain lyrics stay
    assert WAVE(folder / "take1.wav").tags.getall("SYLT")[0].text == sylt.text
    assert parse_lrc(FLAC(folder / "take1.flac")["LYRICS"][0])[0].text == LINES[0]
    assert not list(folder.glob(".*"))  # no tagging copies left behind


# ---- alignment, pure


def test_an_ad_lib_between_lines_shifts_nothing_and_costs_nothing():
    lines = lyric_lines(LYRICS)
    heard = _timed(LINES[0], 0.0) + _timed("oh yeah yeah baby", 2.5) + _timed(LINES[1], 5.0)
    heard += _timed(LINES[2], 8.0) + _timed(LINES[3], 11.0)
    results = align(lines, heard)
    assert [r.status for r in results] == ["sung"] * 4 and [r.wer for r in results] == [0.0] * 4
    assert [r.start for r in results] == [0.0, 5.0, 8.0, 11.0]
    assert sung_share(results) == 1.0


def test_a_half_sung_line_is_partly_sung_and_a_misheard_word_is_still_sung():
    lines = lyric_lines("\n".join(LINES))
    heard = _timed("walking down the morning treat", 0.0) + _timed("the city hums", 3.0) + _timed(LINES[2], 6.0)
    results = align(lines, heard)
    assert [r.status for r in results] == ["sung", "partly", "sung", "missing"]
    assert results[0].wer == 0.2 and results[1].wer == 0.5 and results[3].start is None


def test_normalisation_and_section_tags():
    assert normalise("Don’t STOP, (oh) café!") == ["don't", "stop", "oh", "cafe"]
    assert [line.text for line in lyric_lines("[Intro]\n\n[Verse 1]\nHello, world\n...\n[Chorus 2]\nla la")] == [
        "Hello, world",
        "la la",
    ]


def test_lyrics_longer_than_any_song_are_refused():
    with pytest.raises(ValueError, match="more than a 10-minute song"):
        align(lyric_lines("la " * 3001), [])


def test_the_longest_lyrics_against_a_recogniser_looping_on_noise_stay_bounded():
    lyrics = "\n".join(" ".join(f"w{i * 6 + j}" for j in range(6)) for i in range(500))  # 3,000 words
    heard = [Word(f"w{i}", i * 0.1, i * 0.1 + 0.05) for i in range(3000)]
    heard += [Word("la", 300 + i * 0.01, 300 + i * 0.01) for i in range(20_000)]  # cut at 6,000 tokens
    results = align(lyric_lines(lyrics), heard)
    assert len(results) == 500 and all(r.status == "sung" for r in results)


# ---- LRC


def test_lrc_round_trip_with_word_times():
    lines = lyric_lines(LYRICS)
    results = align(lines, _timed(LINES[0], 1.0) + _timed(LINES[1], 65.5))
    text = to_lrc(results, title="A [song]")
    assert text.splitlines()[0] == "[ti:A [song]]" and "[01:05.50]<01:05.50>the" in text
    parsed = parse_lrc(text)
    assert [(line.time, line.text) for line in parsed] == [(1.0, LINES[0]), (65.5, LINES[1])]
    assert parsed[1].words[1] == (65.9, "city")
    plain = parse_lrc(to_lrc(results, words=False))
    assert [line.words for line in plain] == [(), ()] and plain[0].text == LINES[0]
    assert stamp(3599.999) == "60:00.00"


def test_lrc_parse_refuses_untimed_lines_and_huge_files():
    with pytest.raises(ValueError, match="line 2 has no"):
        parse_lrc("[ti:x]\nno time here\n")
    with pytest.raises(ValueError, match="characters"):
        parse_lrc("[00:01.00]x\n" * 100_000)


# ---- the run's guards


class NeverCalled:
    def words(self, audio, lyrics, control):
        raise AssertionError("the recogniser ran")

    def separate(self, audio, model="", progress=None):
        raise AssertionError("the splitter ran")


@pytest.mark.parametrize(
    "request_fields", [{"instrumental": True}, {"lyrics": "[Instrumental]"}, {"lyrics": "[verse]\n\n"}]
)
def test_instrumental_takes_are_refused_before_any_model_time(tmp_path, request_fields):
    store = OutputStore(tmp_path)
    run_id = _save(store, np.zeros((2, 4800), np.float32), **request_fields)
    with pytest.raises(ValueError, match=INSTRUMENTAL_MESSAGE):
        LyricsChecker(store, NeverCalled(), NeverCalled()).check(run_id, 1, RunControl())


def test_a_missing_take_and_a_cancel_change_nothing(tmp_path):
    store = OutputStore(tmp_path)
    run_id = _save(store, speak(LINES[:1]))
    before = (store.run_folder(run_id) / SETTINGS_FILE).read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="has 1 take"):
        LyricsChecker(store, NeverCalled(), NeverCalled()).check(run_id, 2, RunControl())
    control = RunControl()
    control.cancel()
    with pytest.raises(Cancelled):
        LyricsChecker(store, PocketSphinxRecogniser(), SpeechOnly()).check(run_id, 1, control)
    assert (store.run_folder(run_id) / SETTINGS_FILE).read_text(encoding="utf-8") == before
    assert not (store.run_folder(run_id) / "lyrics-take1").exists()


def test_core_settings_are_not_rewritten(tmp_path):
    store = OutputStore(tmp_path)
    run_id = _save(store, np.zeros((2, 4800), np.float32))
    with pytest.raises(ValueError, match="as made"):
        store.update_settings(run_id, "request", {})


# ---- the Whisper path


def test_speech_model_follows_the_device():
    assert choose_speech_model(None, "cuda", 24.0).model == LARGE_SPEECH_MODEL
    assert choose_speech_model(None, "cuda", 8.0).model == SMALL_SPEECH_MODEL
    assert choose_speech_model(None, "cpu").model == SMALL_SPEECH_MODEL
    assert choose_speech_model("/models/whisper", "cpu").model == "/models/whisper"
    recogniser, choice = make_recogniser(None, DeviceInfo("cuda", "bfloat16"), 80.0)
    assert recogniser.model == LARGE_SPEECH_MODEL and "beside the DiT" in choice.reason


class Recording:
    """Keeps what the wrapped recogniser heard."""

    def __init__(self, recogniser) -> None:
        self.recogniser = recogniser
        self.heard: list[Word] = []

    def words(self, audio, lyrics, control):
        self.heard = self.recogniser.words(audio, lyrics, control)
        return self.heard


def test_tiny_whisper_runs_end_to_end_through_from_pretrained(tmp_path, cache_dir):
    from tools.tiny_whisper import ensure_tiny_whisper

    store = OutputStore(tmp_path / "out")
    audio = speak(LINES[:1])
    run_id = _save(store, audio)
    whisper = WhisperRecogniser(str(ensure_tiny_whisper(cache_dir)), DeviceInfo("cpu", "float32"), max_new_tokens=8)
    recogniser = Recording(whisper)
    checker = LyricsChecker(store, recogniser, StemSplitter(device="cpu"), stem_model="demucs_unittest")
    check = checker.check(run_id, 1, RunControl())
    # Random weights hear gibberish, but they hear it as timed words, through the real Demucs and pipeline.
    assert recogniser.heard and all(isinstance(word.text, str) and word.text for word in recogniser.heard)
    assert all(0.0 <= word.start <= word.end <= 30.0 for word in recogniser.heard)
    assert [r.line.number for r in check.lines] == [1, 2, 3, 4]
    assert check.lrc_path.is_file() and parse_lrc(check.lrc_path.read_text(encoding="utf-8")) is not None
    saved = json.loads((store.run_folder(run_id) / SETTINGS_FILE).read_text(encoding="utf-8"))
    assert [line["line"] for line in saved["lyrics_check"]["take1"]["lines"]] == [1, 2, 3, 4]
