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


@pytest.mark.parametrize(
    ("value", "shown"),
    [(5000.0, "got 5000"), (25.0, "got 25"), (0.0, "got 0"), (2.5, "got 2.5"), (99999999999, "got 99,999,999,999")],
)
def test_a_refused_number_reads_as_people_write_it(value, shown):
    with pytest.raises(ValueError, match=rf"{shown}$"):
        check_range("steps", value, 1e12, 1e13)


@pytest.fixture()
def built(studio):
    from ui.layout import build_ui

    return build_ui(studio)


def test_no_control_clamps_a_typed_number(built):
    """A slider's box clamps what is typed (5000 steps became 200, without a word); the page's
    ranged fields are number boxes with no bounds of their own and their range in their label."""
    demo = built
    sliders = [block.label for block in demo.blocks.values() if isinstance(block, gr.Slider)]
    assert not sliders, f"these clamp a typed number to their range: {sliders}"
    bounded = [
        block.label
        for block in demo.blocks.values()
        if isinstance(block, gr.Number) and (block.minimum is not None or block.maximum is not None)
    ]
    assert not bounded, f"Gradio refuses these out of range in its own words, before the handler: {bounded}"
    labels = {block.label for block in demo.blocks.values() if isinstance(block, gr.Number)}
    assert {"Steps (1-200)", "Mastering ceiling (dBTP, -6 to 0)", "Fade in (s, 0-30)"} <= labels


def test_unqueued_events_never_raise(built):
    """Gradio drops the words of an unqueued event's error (a bare red "Error" is all the page
    shows), so a handler that may refuse runs queued."""
    import inspect

    demo = built
    unqueued = [fn.fn for fn in demo.fns.values() if fn.fn is not None and fn.queue is False]
    assert len(unqueued) > 10
    raising = [
        getattr(fn, "__qualname__", repr(fn)) for fn in unqueued if "raise" in inspect.getsource(inspect.unwrap(fn))
    ]
    assert not raising, f"unqueued handlers that may raise: {raising}"


@pytest.mark.parametrize(
    ("weight", "words"),
    [(5.0, "Its weight: must be between 0 and 2, got 5"), (None, "Its weight: give a number between 0 and 2")],
)
def test_a_lora_weight_out_of_range_is_refused_not_clamped(weight, words):
    from ui.lora_panel import with_lora

    with pytest.raises(ValueError, match=f"^{words}$"):
        with_lora("", "a1b2", weight)
    assert with_lora("a1b2:1", "a1b2", 0.5) == "a1b2:0.5"
