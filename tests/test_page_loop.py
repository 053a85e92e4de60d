"""The page's loop without a browser: stages with one number, messages in the page's words, the
per-browser run board, Reuse its plan on a Vary run, Edit's default segment."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
import soundfile as sf

from ui.layout import middle_third
from ui.progress import BoardRelay, RunBoard, stage_of
from ui.song_form import plan_values
from ui.words import in_words, user_terms
from validation import check_range, figure

BROWSER = "b" * 32


@pytest.mark.parametrize(
    ("message", "stage", "count"),
    [
        ("Loading tiny on CPU…", "Loading the model", None),
        ("Planning: audio codes 40/200", "Planning", 40),
        ("Encoding prompt…", "Encoding", None),
        ("Denoising step 3/8", "Denoising", 3),
        ("FlowEdit step 2/5", "Denoising", 2),
        ("Decoding audio…", "Decoding", None),
        ("Mastering…", "Mastering", None),
        ("Writing files…", "Writing files", None),
    ],
)
def test_every_engine_message_has_a_labelled_stage(message, stage, count):
    assert stage_of(message)[:2] == (stage, count)


def test_a_run_reads_as_one_stage_and_one_number_then_its_end():
    board = RunBoard()
    view = board.begin(BROWSER, "session-1")
    relay = BoardRelay(None, view)
    for step in range(1, 4):
        relay(0.1 * step, f"Denoising step {step}/8")
    line = view.line()
    assert "<strong>Denoising</strong> · step 3 of 8" in line and "left" in line and "%" not in line
    relay(0.9, "Decoding audio…")
    assert "<strong>Decoding</strong>" in view.line() and "step" not in view.line().split("<br>")[0]
    view.run_id, view.ended = "run-1", "done"
    assert "Done" in view.line() and "run-1" in view.line()
    assert board.get(BROWSER) is view, "a reloaded page with the same id finds the run"


def test_the_board_ignores_ids_a_page_did_not_make_and_stays_bounded():
    board = RunBoard(max_browsers=2)
    assert board.begin("short", "s") is None and board.get({"not": "an id"}) is None
    for i in range(3):
        board.begin(f"{i}" * 32, "s")
    assert board.get("0" * 32) is None and board.get("2" * 32) is not None


def test_messages_name_the_controls_on_screen_and_write_numbers_as_people_do():
    assert user_terms("repainting_end: must be after repainting_start") == (
        "Segment end: must be after “Segment start”"
    )
    assert user_terms("src_audio: not an uploaded file").startswith("Source song:")
    with pytest.raises(ValueError, match=r"seed: must be between 0 and 4,294,967,295"):
        check_range("seed", -2, 0, 2**32 - 1)
    assert figure(600) == "600" and figure(0.5) == "0.5" and figure(1e6) == "1,000,000"


def test_a_page_handler_raises_in_the_pages_words_with_markup_as_text():
    def handler(value: str) -> str:
        raise gr.Error("seed: must be between 0 and 4,294,967,295, got <b>9</b>")

    with pytest.raises(gr.Error) as caught:
        in_words(handler)("x")
    assert caught.value.message.startswith("Seed: ")
    assert "&lt;b&gt;" in caught.value.message, "markup is shown as text"


def test_reuse_its_plan_on_a_vary_run_takes_the_replayed_codes():
    codes = "<|audio_code_1|>" * 50
    vary_run = {"request": {"prompt": "caption", "audio_codes": codes}, "plan": None, "vary": {"parent_run_id": "a"}}
    assert plan_values(vary_run)["audio_codes"] == codes
    with pytest.raises(ValueError, match="Think was off"):
        plan_values({"request": {"prompt": "x"}, "plan": None})


def test_edit_starts_from_the_middle_third_of_the_loaded_source(tmp_path):
    path = tmp_path / "source.wav"
    sf.write(path, np.zeros((48_000 * 12, 2), dtype=np.float32), 48_000)
    assert middle_third(str(path)) == (4.0, 8.0)
    assert middle_third(None) == (gr.skip(), gr.skip()), "no source: the fields are left as they are"
