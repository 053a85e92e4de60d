"""Each take of a planned run replays as itself: "Reuse its plan" puts the take the user picks
in the form, and Vary hands every take's own codes to the pipeline."""

from __future__ import annotations

import json

import gradio as gr
import numpy as np
import pytest

from backend import RunControl
from modes import GenerateRequest
from outputs import OutputStore
from studio import Studio
from ui.song_form import SettingsHandlers, SongForm, plan_values
from ui.words import in_words
from variations import VaryRequest

LYRICS = "[verse]\nhello rain on the window\n[chorus]\nsing it again"
FORM_FIELDS = ("prompt", "lyrics", "seed", "batch_size", "audio_codes", "bpm", "think")


def code_text(codes: list[int]) -> str:
    return "".join(f"<|audio_code_{c}|>" for c in codes)


@pytest.fixture(scope="module")
def planned_run(tiny_backend, tiny_planner, tmp_path_factory):
    """A Think run of two takes (each its own codes), and the studio that made it."""
    studio = Studio(backend=tiny_backend, store=OutputStore(tmp_path_factory.mktemp("outputs")), planner=tiny_planner)
    request = GenerateRequest(
        prompt="calm piano ballad", lyrics=LYRICS, audio_duration=10, num_inference_steps=2, seed=11, think=True,
        bpm=97, batch_size=2, wav_bit_depth="32f",
    )  # fmt: skip
    return studio, studio.generate(request, RunControl())


def small_form() -> SongForm:
    """The form's components a Generate request fills, standing alone (no page around them)."""
    shared = {name: gr.Textbox() for name in FORM_FIELDS}
    return SongForm(shared, {}, gr.Radio(["generate", "edit"]), gr.Radio(["edit", "flow_edit"]))


def test_reuse_its_plan_puts_the_picked_takes_codes_and_seed_in_the_form(planned_run):
    studio, run = planned_run
    form = small_form()
    reuse = in_words(SettingsHandlers(studio, None, form).reuse_handler)  # as the page wires it
    text = json.dumps(run.settings)
    plans = run.settings["plan"]["takes"]
    assert plans[0]["codes"] != plans[1]["codes"]
    for take in (1, 2, 2.0):
        shown = dict(zip(form.shared, reuse(text, None, take), strict=False))
        picked = int(take) - 1
        assert shown["audio_codes"] == code_text(plans[picked]["codes"])
        assert shown["seed"] == run.takes[picked].seed
        assert shown["batch_size"] == 1 and shown["bpm"] == plans[picked]["bpm"]
    with pytest.raises(gr.Error, match=r"Take: the run has 2 take\(s\), got 3"):
        reuse(text, None, 3)
    for bad in (0, 1.5, None, float("nan")):
        with pytest.raises(gr.Error, match="Take: pick a take by its number, 1 for the first"):
            reuse(text, None, bad)


def test_the_picked_take_renders_as_it_was_made(planned_run, studio):
    """Take 2 replayed from the form's values, on a studio with no planner, is take 2's audio."""
    import soundfile as sf

    _, run = planned_run
    values = plan_values(run.settings, take=2)
    again = studio.generate(GenerateRequest.from_values(values), RunControl())
    assert again.settings["plan"] is None and len(again.takes) == 1
    made, replayed = (sf.read(t.files["wav"], dtype="float32")[0] for t in (run.takes[1], again.takes[0]))
    np.testing.assert_allclose(replayed, made, atol=1e-5)  # one take alone, not beside another: same song


def test_vary_of_a_planned_run_replays_each_takes_own_codes(planned_run, monkeypatch):
    studio, run = planned_run
    quantizer = studio.backend.load().audio_tokenizer.quantizer
    received: list[list[list[int]]] = []
    original = quantizer.get_output_from_indices

    def recording(indices):  # the codes the pipeline turns into the DiT's condition, one row per take
        received.append(indices[..., 0].tolist())
        return original(indices)

    monkeypatch.setattr(quantizer, "get_output_from_indices", recording)
    varied = studio.vary(VaryRequest(parent_run_id=run.run_id, variance=0.4, seed=5), RunControl())
    planned = [take["codes"] for take in run.settings["plan"]["takes"]]
    assert received and all(rows == planned for rows in received)
    assert len(varied.takes) == 2 and varied.settings["vary"]["parent_run_id"] == run.run_id
