"""The lyrics check on the page and the API: a tiny take checked with the tiny Whisper through
``/check_lyrics`` and repaired through ``/repair_lyrics``; the panel's own handlers on real
speech timings (espeak-ng + pocketsphinx): the table, named stages, a repair and an edit by
section that leave the take bit-identical outside their windows; instrumental takes and cancel."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
from gradio_client import Client
from gradio_client.exceptions import AppError
from test_app import free_port

import app
from lyrics_check.check import INSTRUMENTAL_MESSAGE, saved_check
from lyrics_check.lrc import parse_lrc
from lyrics_check.repair import flagged_windows
from outputs import SETTINGS_FILE, OutputStore
from rework import SPLICE_FADE_S
from studio import Studio
from tests.lyrics_speech import PocketSphinxRecogniser, SpeechOnly, speak
from tests.test_lyrics_check import LINES, LYRICS, _save
from ui.lyrics_check_panel import CHECK_WORDS, LyricsCheckRuns, hears_with_test_model
from ui.runs import ActiveRuns
from validation import MAX_BATCH

SR = 48_000
RUN_ID_AT = 1 + MAX_BATCH + 3  # SongRuns.present's outputs: summary, players, files, settings, status, run id


@pytest.fixture(scope="module")
def server(tiny_backend, tmp_path_factory):
    """The page over a tiny studio whose lyrics check is the default one: the tiny Whisper, tiny Demucs."""
    studio = Studio(backend=tiny_backend, store=OutputStore(tmp_path_factory.mktemp("outputs")))
    port = free_port()
    demo = app.launch(studio, "127.0.0.1", port, preload=False, prevent_thread_lock=True, quiet=True)
    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    yield studio, client
    client.close()
    demo.close()


def test_a_tiny_take_is_checked_and_repaired_through_the_api(server):
    studio, client = server
    _, settings = client.predict(prompt="check me", lyrics=LYRICS, audio_duration=10, seed=3, api_name="/generate")
    run_id = settings["run_id"]
    lrc, record = client.predict(run_id=run_id, take=1, api_name="/check_lyrics")
    # Random weights hear gibberish: every line is reported, each with a status and score.
    assert [line["line"] for line in record["lines"]] == [1, 2, 3, 4]
    assert all(line["status"] in ("sung", "partly", "missing") for line in record["lines"])
    assert 0.0 <= record["sung_share"] <= 1.0 and lrc.endswith("take1.lrc")
    saved = studio.store.run_folder(run_id) / "lyrics-take1" / "take1.lrc"
    assert parse_lrc(saved.read_text(encoding="utf-8")) is not None
    kept = json.loads((studio.store.run_folder(run_id) / SETTINGS_FILE).read_text(encoding="utf-8"))
    assert kept["lyrics_check"]["take1"]["lrc"] == "lyrics-take1/take1.lrc"
    from mutagen.flac import FLAC

    folder = studio.store.run_folder(run_id)  # the timings are in the take's own files, too
    assert FLAC(folder / "take1.flac")["LYRICS"][0] == saved.read_text(encoding="utf-8")
    files, again = client.predict(run_id=run_id, take=1, lines="Chorus", api_name="/repair_lyrics")
    repaired = json.loads(Path(next(f for f in files if f.endswith(SETTINGS_FILE))).read_text(encoding="utf-8"))
    assert repaired["mode"] == "edit" and repaired["run_id"] != run_id
    assert repaired["request"]["lyrics"].startswith("[chorus]\n" + LINES[2])
    assert [line["text"] for line in again["lines"]] == LINES  # checked against the whole song
    with pytest.raises(AppError, match="no line or section called 'bridge'"):
        client.predict(run_id=run_id, take=1, lines="bridge", api_name="/repair_lyrics")


def test_instrumental_takes_are_refused_in_words(server):
    studio, client = server
    _, settings = client.predict(prompt="no words", instrumental=True, audio_duration=10, api_name="/generate")
    for api_name in ("/check_lyrics", "/repair_lyrics"):
        with pytest.raises(AppError, match=INSTRUMENTAL_MESSAGE):
            client.predict(run_id=settings["run_id"], api_name=api_name)
    panel = LyricsCheckRuns(studio, ActiveRuns()).view(settings["run_id"], 1)
    _, check_button, table, *_ = panel
    assert INSTRUMENTAL_MESSAGE in table and check_button.interactive is False
    assert hears_with_test_model(studio)  # the panel says so: the tiny Whisper is a test model
    assert "lyrics_check" not in json.loads((studio.store.run_folder(settings["run_id"]) / SETTINGS_FILE).read_text())


@pytest.fixture()
def speech_studio(tiny_backend, tmp_path):
    """A tiny studio that hears real speech timings (pocketsphinx), its takes being speech alone."""
    store = OutputStore(tmp_path / "outputs")
    return Studio(backend=tiny_backend, store=store, splitter=SpeechOnly(), speech=PocketSphinxRecogniser())


def _take(studio: Studio, run_id: str) -> np.ndarray:
    return sf.read(studio.store.run_folder(run_id) / "take1.wav", dtype="float32", always_2d=True)[0]


def _same_outside(before: np.ndarray, after: np.ndarray, start: float, end: float) -> bool:
    fade = round(SPLICE_FADE_S * SR)
    first, last = max(0, round(start * SR) - fade), round(end * SR) + fade
    return np.array_equal(before[:first], after[:first]) and np.array_equal(before[last:], after[last:])


def test_the_panel_checks_repairs_and_edits_by_section(speech_studio):
    studio = speech_studio
    run_id = _save(studio.store, speak([LINES[0], LINES[1], LINES[3]]))
    handlers, stages = LyricsCheckRuns(studio, ActiveRuns()), []
    assert not hears_with_test_model(studio)
    progress = lambda fraction, desc="": stages.append(desc.split(":")[0])  # noqa: E731
    take, _, table, lrc, repair_button, picker, _ = handlers.check_handler(run_id, 1, progress=progress)
    assert take == 1 and table.count('class="lyric-row') == 4 and "Lines sung: <strong>75%</strong>" in table
    assert '<tr class="lyric-row lyric-missing"><td>3</td>' in table and table.count("data-t=") == 3
    assert lrc.visible is True and repair_button.interactive is True
    assert {"Verse", "Chorus", "Line 3: we sing together all night long"} <= {c[0] for c in picker.choices}
    assert {"Separating vocals", "Hearing", "Aligning", "Writing"} <= set(stages)
    from mutagen.id3 import ID3

    sylt = ID3(studio.store.run_folder(run_id) / "take1.mp3").getall("SYLT")[0].text
    assert [ms for _, ms in sylt] == sorted(ms for _, ms in sylt) and len(sylt) == 18  # each sung word, in order
    first = saved_check(studio.store, run_id, 1)
    outputs = handlers.repair_handler(run_id, 1, [], progress=progress)
    repaired = outputs[RUN_ID_AT]
    [window] = flagged_windows(first.lines, 100.0)
    assert repaired != run_id and _same_outside(
        _take(studio, run_id), _take(studio, repaired), window.start, window.end
    )
    assert "Re-making" in stages and outputs[RUN_ID_AT + 1][0]["run_id"] == repaired  # in History
    # The latest run's panel shows its own check (made against the whole song); then edit by line.
    assert handlers.view(repaired, 1)[2].count('class="lyric-row') == 4
    second = saved_check(studio.store, repaired, 1)
    again = handlers.remake_handler(repaired, 1, [], ["Verse"], progress=progress)[RUN_ID_AT]
    [verse] = flagged_windows(second.lines, len(_take(studio, repaired)) / SR, {1, 2})
    assert _same_outside(_take(studio, repaired), _take(studio, again), verse.start, verse.end)
    assert verse.end < len(_take(studio, repaired)) / SR  # the chorus was kept


def test_cancel_stops_the_check_and_keeps_the_run(speech_studio):
    studio = speech_studio
    run_id = _save(studio.store, speak(LINES[:1]))
    runs = ActiveRuns()
    before = (studio.store.run_folder(run_id) / SETTINGS_FILE).read_text(encoding="utf-8")

    def cancel_while_hearing(fraction: float, desc: str = "") -> None:
        if desc.startswith("Hearing") or desc.startswith("Separating"):
            runs.cancel("anonymous")

    with pytest.raises(Exception, match=CHECK_WORDS.cancelled):
        LyricsCheckRuns(studio, runs).check_handler(run_id, 1, progress=cancel_while_hearing)
    assert (studio.store.run_folder(run_id) / SETTINGS_FILE).read_text(encoding="utf-8") == before


def test_the_command_line_picks_the_speech_model_and_says_so(monkeypatch, capsys, tmp_path):
    from lyrics_check.recognise import SMALL_SPEECH_MODEL, SPEECH_ENV_VAR
    from serving.cli import make_studio, parse_args

    monkeypatch.delenv(SPEECH_ENV_VAR, raising=False)
    args = ["--device", "cpu", "--outputs", str(tmp_path), "--lyrics-model", "none", "--planner", "none"]
    tiny = make_studio(parse_args(["--model", "tiny", *args]))
    assert "tiny-whisper" in tiny.speech.model and "test model" in capsys.readouterr().err
    real = make_studio(parse_args(["--model", "xl-turbo", *args]))  # nothing loads until the first check
    assert real.speech.model == SMALL_SPEECH_MODEL and "whisper-base: cpu" in capsys.readouterr().err
    asked = make_studio(parse_args(["--model", "tiny", "--speech-model", "/models/whisper", *args]))
    assert asked.speech.model == "/models/whisper" and "as asked" in capsys.readouterr().err


def test_the_command_line_checks_a_saved_run_and_refuses_an_instrumental_one(tmp_path, cache_dir, capsys):
    from lyrics_check.__main__ import main

    store = OutputStore(tmp_path / "outputs")
    run_id = _save(store, speak(LINES[:1]))
    options = ["--model", "tiny", "--device", "cpu", "--outputs", str(store.root)]
    assert main(["check", run_id, *options]) == 0
    said = capsys.readouterr()
    assert said.out.count("missing") + said.out.count("sung") >= 4 and "Lines sung:" in said.out
    assert "lyrics-take1/take1.lrc" in said.out and "Separating the vocals" in said.err
    silent = _save(store, np.zeros((2, SR), np.float32), instrumental=True)
    assert main(["repair", silent, *options]) == 2 and INSTRUMENTAL_MESSAGE in capsys.readouterr().err


def test_on_a_shared_studio_a_check_or_repair_reaches_only_this_browsers_runs(speech_studio):
    from ui.history import RunOwners

    theirs = _save(speech_studio.store, speak(LINES[:1]))
    handlers = LyricsCheckRuns(speech_studio, ActiveRuns(owners=RunOwners()))
    with pytest.raises(gr.Error, match="was made in this browser"):
        handlers.check_api(theirs, 1, progress=lambda *_, **__: None)
    with pytest.raises(gr.Error, match="was made in this browser"):
        handlers.repair_api(theirs, 1, "Verse", progress=lambda *_, **__: None)
    assert not (speech_studio.store.run_folder(theirs) / "lyrics-take1").exists()


def test_on_zerogpu_the_check_and_repair_run_through_their_gpu_entry_point(speech_studio, monkeypatch):
    """On a ZeroGPU Space the work must run inside a ``spaces.GPU`` task (the identity here, where
    ``spaces`` is not installed), with the studio the worker inherits from ``attach``."""
    import ui.lyrics_check_panel as panel
    from serving import zerogpu

    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs.get("repair", False))
        return zerogpu.lyrics_check_on_zerogpu(*args, **kwargs)

    monkeypatch.setenv("SPACE_ID", "someone/studio")
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setattr(panel, "lyrics_check_on_zerogpu", spy)
    run_id = _save(speech_studio.store, speak([LINES[0], LINES[1], LINES[3]]))
    handlers = LyricsCheckRuns(speech_studio, ActiveRuns())
    zerogpu.attach(speech_studio)
    try:
        check = handlers.check(run_id, 1, lambda *_, **__: None, None)
        _, repaired = handlers.repair(run_id, 1, None, lambda *_, **__: None, None)
    finally:
        zerogpu.attach(None)
    assert calls == [False, True]
    assert [line.status for line in check.lines].count("missing") == 1
    assert repaired.run_id != run_id and saved_check(speech_studio.store, repaired.run_id, 1) is not None
