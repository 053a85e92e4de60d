"""Optional number boxes (Cover's duration, BPM, FlowEdit's edit steps, ...): empty, not 0, on a
fresh page and after a saved run that left them empty is put back; empty reaches the request as
None. The browser half is ``test_browser_look.py::test_optional_numbers_start_empty_and_a_run_sends_them_empty``."""

from __future__ import annotations

import dataclasses

import gradio as gr
import pytest

from modes import REQUEST_TYPES, CoverRequest, GenerateRequest
from theme import EMPTY_NUMBER_CLASS
from ui.layout import build_page
from ui.song_form import song_values


@pytest.fixture()
def page(studio):
    with gr.Blocks() as demo:
        return build_page(studio, demo)


def marked(page) -> set[str]:
    """The form's number boxes marked to show empty rather than 0, by elem_id."""
    return {
        target.elem_id
        for target in page.form.targets
        if isinstance(target, gr.Number) and EMPTY_NUMBER_CLASS in (target.elem_classes or [])
    }


def test_every_number_that_may_be_unset_is_marked_to_show_empty(page):
    names = marked(page)
    expected = {"generate-audio_duration", "cover-audio_duration", "bpm", "flow_edit-n_max", "edit-repainting_end"}
    assert names == expected, "numbers a request reads as unset when 0; never seed, top-k or a segment's start"


def test_restoring_a_run_that_left_numbers_empty_shows_them_empty(page):
    saved = dataclasses.replace(GenerateRequest(prompt="x", think=True), audio_duration=None, bpm=None)
    by_id = {t.elem_id: u for t, u in zip(page.form.targets, page.form.updates(saved), strict=True)}
    assert by_id["generate-audio_duration"] is None, "the planner chose the length: empty, not 0"
    assert by_id["bpm"] is None
    saved = dataclasses.replace(saved, bpm=96, audio_duration=30.0)
    by_id = {t.elem_id: u for t, u in zip(page.form.targets, page.form.updates(saved), strict=True)}
    assert (by_id["bpm"], by_id["generate-audio_duration"]) == (96, 30.0), "values the run had come back"
    cover = CoverRequest(prompt="x", src_audio="", audio_duration=None)
    by_id = {t.elem_id: u for t, u in zip(page.form.targets, page.form.updates(cover), strict=True)}
    assert by_id["cover-audio_duration"] is None, "Cover's duration: empty = the source's"


@pytest.mark.parametrize("cleared", [None, 0, "0"])
def test_an_empty_number_reaches_the_request_as_none(cleared):
    mode, values = song_values("cover", "edit", {"bpm": cleared, "cover.audio_duration": cleared, "cover.prompt": "x"})
    request = CoverRequest.from_values({**values, "src_audio": "song.wav"})
    assert mode == "cover"
    assert request.audio_duration is None and request.bpm is None
    generate = REQUEST_TYPES["generate"].from_values({"prompt": "x", "think": True, "audio_duration": cleared})
    assert generate.audio_duration is None, "Generate's empty duration: the planner chooses"
