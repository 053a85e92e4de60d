"""Optional number boxes (Cover's duration, BPM, FlowEdit's edit steps, ...): empty, not 0, on a
fresh page and after a saved run that left them empty is put back; empty reaches the request as
None. The browser half is ``test_browser_look.py::test_optional_numbers_start_empty_in_the_browser``."""

from __future__ import annotations

import dataclasses

import gradio as gr
import pytest

from modes import REQUEST_TYPES, CoverRequest, GenerateRequest
from ui.layout import build_page
from ui.song_form import song_values


@pytest.fixture()
def page(studio):
    with gr.Blocks() as demo:
        return build_page(studio, demo)


def blanked(page) -> set[str]:
    """The targets a fresh page's load sets to None (empty), by elem_id."""
    updates = page.form.on_load()
    return {target.elem_id for target, update in zip(page.form.targets, updates, strict=True) if update is None}


def test_a_fresh_page_blanks_every_number_that_is_empty_by_default(page):
    names = blanked(page)
    assert {"cover-audio_duration", "bpm", "flow_edit-n_max"} <= names, names
    assert "generate-audio_duration" not in names, "Generate's duration starts at its default length"
    assert "seed" not in names, "a number with a value keeps it"
    assert all(
        isinstance(target, gr.Number) and target.value is None
        for target in page.form.targets
        if target.elem_id in names
    )


def test_restoring_a_run_that_left_numbers_empty_shows_them_empty(page):
    saved = dataclasses.replace(GenerateRequest(prompt="x", think=True), audio_duration=None, bpm=None)
    updates = page.form.on_load(page.form.updates(saved))
    by_id = {target.elem_id: update for target, update in zip(page.form.targets, updates, strict=True)}
    assert by_id["generate-audio_duration"] is None, "the planner chose the length: empty, not 0"
    assert by_id["bpm"] is None
    assert by_id["cover-audio_duration"] is None, "another tab's optional number is still blanked on load"
    saved = dataclasses.replace(saved, bpm=96)
    by_id = dict(zip([t.elem_id for t in page.form.targets], page.form.on_load(page.form.updates(saved)), strict=True))
    assert by_id["bpm"] == 96, "a value the run had is put back as it was"


@pytest.mark.parametrize("cleared", [None, 0, "0"])
def test_an_empty_number_reaches_the_request_as_none(cleared):
    mode, values = song_values("cover", "edit", {"bpm": cleared, "cover.audio_duration": cleared, "cover.prompt": "x"})
    request = CoverRequest.from_values({**values, "src_audio": "song.wav"})
    assert mode == "cover"
    assert request.audio_duration is None and request.bpm is None
    generate = REQUEST_TYPES["generate"].from_values({"prompt": "x", "think": True, "audio_duration": cleared})
    assert generate.audio_duration is None, "Generate's empty duration: the planner chooses"
