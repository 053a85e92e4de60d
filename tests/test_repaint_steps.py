"""Official repaint (repaint_steps): the modes' numbers, and on the tiny model what the DiT is given."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from backend import RunControl
from modes import EditRequest, ExtendRequest
from outputs import load_settings
from repaint_steps import RepaintConfig, RepaintInjection, injection_steps, repaint_config, soft_mask
from rework import prepare
from tests.test_rework import write_song

STEPS = 8


@pytest.mark.parametrize(
    ("mode", "strength", "ratio", "frames"),
    [("balanced", 0.5, 0.5, 12), ("balanced", 0.0, 1.0, 25), ("balanced", 1.0, 0.0, 0),
     ("balanced", 0.2, 0.8, 20), ("conservative", 0.9, 1.0, 25), ("aggressive", 0.1, 0.0, 0)],
)  # fmt: skip
def test_modes_stand_for_the_official_numbers(mode, strength, ratio, frames):
    config = repaint_config(mode, strength)
    assert config.injection_ratio == pytest.approx(ratio)
    assert config.crossfade_frames == frames


def test_balanced_re_injects_after_the_first_half_of_the_steps_never_the_last():
    assert injection_steps(repaint_config("balanced", 0.5), 8) == [0, 1, 2, 3]
    assert injection_steps(repaint_config("conservative", 0.5), 8) == [0, 1, 2, 3, 4, 5, 6]
    assert injection_steps(repaint_config("aggressive", 0.5), 8) == []


def test_soft_mask_ramps_outside_the_segment_only():
    segment = torch.zeros(1, 20, dtype=torch.bool)
    segment[0, 8:12] = True
    soft = soft_mask(segment, 3)[0]
    assert soft[8:12].tolist() == [1.0] * 4
    assert soft[:5].tolist() == [0.0] * 5 and soft[15:].tolist() == [0.0] * 5
    assert soft[5:8].tolist() == pytest.approx([0.25, 0.5, 0.75])
    assert soft[12:15].tolist() == pytest.approx([0.75, 0.5, 0.25])


def test_aggressive_adds_nothing_to_the_sampler(tmp_path):
    from audio_io import load_audio

    src = write_song(tmp_path / "src.wav", 10.0)
    source = load_audio(str(src))
    for request in (
        EditRequest(src_audio=str(src), repaint_mode="aggressive"),
        ExtendRequest(src_audio=str(src), extend_seconds=5, repaint_mode="aggressive"),
    ):
        assert prepare(request, source, None).step_hooks == []
    assert len(prepare(EditRequest(src_audio=str(src)), source, None).step_hooks) == 1


def test_validation_names_the_repaint_fields():
    with pytest.raises(ValueError, match="repaint_mode"):
        EditRequest.from_values({"src_audio": "x.wav", "repaint_mode": "gentle"})
    with pytest.raises(ValueError, match="repaint_strength"):
        ExtendRequest.from_values({"src_audio": "x.wav", "repaint_strength": 1.5})


def _record_dit(pipe) -> tuple[list[dict], object]:
    calls: list[dict] = []

    def record(module, args, kwargs):
        calls.append({name: kwargs[name].detach().clone() for name in ("hidden_states", "timestep", "context_latents")})

    return calls, pipe.transformer.register_forward_pre_hook(record, with_kwargs=True)


def test_balanced_repaint_re_injects_the_noised_source_outside_the_segment(studio, tmp_path):
    """Each DiT call after an injected step sees, outside the segment, exactly
    t * noise + (1 - t) * source at its own timestep t; inside, the sampler's own latents."""
    src = write_song(tmp_path / "src.wav", 10.0, kind="noise")
    request = EditRequest(
        prompt="rock", src_audio=str(src), repainting_start=4.0, repainting_end=6.0, seed=3, num_inference_steps=STEPS
    )
    pipe = studio.backend.load()
    calls, handle = _record_dit(pipe)
    try:
        run = studio.generate(request, RunControl())
    finally:
        handle.remove()
    assert run.settings["request"]["repaint_mode"] == "balanced"
    assert len(calls) == STEPS
    channels = calls[0]["hidden_states"].shape[-1]
    context = calls[0]["context_latents"]
    source, outside = context[..., :channels], context[..., channels] < 0.5
    assert outside.any() and (~outside).any()
    noise = calls[0]["hidden_states"]
    for step in range(1, STEPS):
        t = float(calls[step]["timestep"][0])
        expected = t * noise + (1 - t) * source
        seen = calls[step]["hidden_states"]
        matches = torch.allclose(seen[outside], expected[outside], atol=1e-6)
        # Re-injected after steps 0-3 (the DiT's calls 1-4), free-running after that.
        assert matches == (step <= 4), step
        assert not torch.allclose(seen[~outside], expected[~outside], atol=1e-3)


def test_the_last_step_blends_into_the_source_at_the_edges(tiny_backend, tmp_path):
    """After the last step: the source beyond the ramps, the sampler's latents inside, a blend between."""
    pipe = tiny_backend.load()
    hook = RepaintInjection(RepaintConfig(0.5, 5))
    seen: dict[int, torch.Tensor] = {}

    def before(step, t, latents):
        seen[step] = latents.clone()
        return latents

    def after(step, t, latents):
        seen[100 + step] = latents.clone()
        return latents

    audio = np.random.default_rng(1).standard_normal((2, 10 * 48_000)).astype(np.float32) * 0.2
    kwargs = {
        "prompt": ["x"], "lyrics": [""], "num_inference_steps": 2, "guidance_scale": 1.0, "shift": 3.0,
        "task_type": "repaint", "src_audio": audio, "audio_duration": 10.0,
        "repainting_start": 4.0, "repainting_end": 6.0,
    }  # fmt: skip
    calls, handle = _record_dit(pipe)
    try:
        tiny_backend.generate(kwargs, [5], RunControl(), step_hooks=[before, hook, after])
    finally:
        handle.remove()
    context = calls[0]["context_latents"]
    channels = context.shape[-1] // 2
    source, segment = context[..., :channels], context[..., channels] > 0.5
    weight = soft_mask(segment, 5).unsqueeze(-1)
    assert torch.allclose(seen[101], weight * seen[1] + (1 - weight) * source, atol=1e-6)
    start, end = int(torch.nonzero(segment[0])[0]), int(torch.nonzero(segment[0])[-1]) + 1
    assert torch.equal(seen[101][:, : start - 5], source[:, : start - 5])
    assert torch.equal(seen[101][:, start:end], seen[1][:, start:end])
    assert hook.injected == [0]  # round(0.5 * 2) = 1 step re-injected


def test_runs_saved_before_the_modes_load_as_they_were_made(tmp_path):
    saved = {"mode": "edit", "request": {"src_audio": "", "repainting_start": 1.0}}
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(saved), encoding="utf-8")
    assert load_settings(path)["request"]["repaint_mode"] == "aggressive"
    saved["request"]["repaint_mode"] = "conservative"
    assert load_settings(json.dumps(saved))["request"]["repaint_mode"] == "conservative"
    generate = {"mode": "generate", "request": {"prompt": "x"}}
    assert "repaint_mode" not in load_settings(json.dumps(generate))["request"]
