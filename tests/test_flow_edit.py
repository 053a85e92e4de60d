"""FlowEdit on the tiny model: identity when nothing changes, a real edit when the text does."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from backend import Cancelled, RunControl
from flow_edit import (
    PAPER_SOURCE_GUIDANCE,
    PAPER_TARGET_GUIDANCE,
    edit_latents,
    encode_audio,
    encode_condition,
    flow_edit,
    guidance_defaults,
    segment_mask,
)
from modes import FlowEditRequest
from rework import SPLICE_FADE_S

SR = 48_000
SAMPLES = 4 * SR  # 100 latent frames
FADE = round(SPLICE_FADE_S * SR)


@pytest.fixture(scope="module")
def source() -> np.ndarray:
    t = np.arange(SAMPLES) / SR
    rng = np.random.default_rng(1)
    mono = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 331 * t) + 0.01 * rng.standard_normal(SAMPLES)
    return np.stack([mono, 0.8 * mono]).astype(np.float32)


def request(**changes) -> FlowEditRequest:
    base = FlowEditRequest(
        src_audio="song.wav",
        source_prompt="soft acoustic guitar ballad",
        source_lyrics="[verse]\nwalking down the morning street",
        prompt="soft acoustic guitar ballad",
        lyrics="[verse]\nwalking down the morning street",
        seed=7,
    )
    return dataclasses.replace(base, **changes).validate()


def vae_round_trip(pipe, audio: np.ndarray) -> np.ndarray:
    """The source through the VAE and back (posterior mean), anti-clipped as the pipeline does."""
    with torch.no_grad():
        latents = pipe.vae.encode(torch.from_numpy(audio)[None]).latent_dist.mean
        decoded = pipe.vae.decode(latents).sample[0]
    decoded = decoded / max(float(decoded.abs().max()), 1.0)
    return decoded.numpy()[:, : audio.shape[-1]]


def conditions(pipe, req: FlowEditRequest):
    with torch.no_grad():
        src = encode_condition(pipe, req.source_prompt, req.source_lyrics, req, 4.0, req.source_guidance_scale)
        tar = encode_condition(pipe, req.prompt, req.lyrics, req, 4.0, req.guidance_scale)
    return src, tar


def run_latents(pipe, req: FlowEditRequest, x_src: torch.Tensor, mask=None) -> torch.Tensor:
    src, tar = conditions(pipe, req)
    with torch.no_grad():
        return edit_latents(pipe, x_src, src, tar, req, RunControl(), mask)


def test_identical_conditions_leave_the_source_latent_exactly(tiny_backend, source):
    pipe = tiny_backend.load()
    with torch.no_grad():
        x_src = encode_audio(pipe, source)
    assert tuple(x_src.shape) == (1, 100, 8)
    # Source and target encoded separately, averaged over several noise draws: dV is exactly 0.
    assert torch.equal(run_latents(pipe, request(n_avg=3), x_src), x_src)
    # End to end the take is the VAE round trip of the source (tolerance: float32 rounding only).
    take = flow_edit(pipe, request(), source, RunControl())
    assert take.shape == source.shape and take.dtype == np.float32
    np.testing.assert_allclose(take, vae_round_trip(pipe, source), rtol=0, atol=1e-6)


def test_a_different_target_changes_the_song(tiny_backend, source):
    pipe = tiny_backend.load()
    target = dict(prompt="aggressive industrial techno, distorted drums", lyrics="[chorus]\nwe sing all night long")
    with torch.no_grad():
        x_src = encode_audio(pipe, source)
    z = run_latents(pipe, request(**target), x_src)
    assert float((z - x_src).abs().mean()) > 0.01 * float(x_src.abs().mean())
    take = flow_edit(pipe, request(**target), source, RunControl())
    assert np.isfinite(take).all() and np.abs(take).max() <= 1.0
    # The tiny random VAE decoder damps latent changes a lot; still 100 times the identity's tolerance.
    assert float(np.sqrt(np.mean((take - vae_round_trip(pipe, source)) ** 2))) > 1e-4
    # The edit is the seed's: the same request repeats exactly, another seed differs.
    assert np.array_equal(take, flow_edit(pipe, request(**target), source, RunControl()))
    assert not np.array_equal(take, flow_edit(pipe, request(**target, seed=8), source, RunControl()))


def test_whole_regeneration_is_the_pipelines_own_sampling(tiny_backend, source):
    """n_max = n_min = all steps: no edit phase, plain sampling from pure noise at t = 1.

    That is text to music with the pipeline's own noise for the seed, so the velocity,
    its sign, the conditions and the Euler step must all match ``__call__``'s.
    """
    pipe = tiny_backend.load()
    req = request(prompt="dreamy shoegaze", n_max=8, n_min=8, seed=21)
    with torch.no_grad():
        x_src = encode_audio(pipe, source)
    ours = run_latents(pipe, req, x_src)
    theirs = pipe(prompt=req.prompt, lyrics=req.lyrics, audio_duration=4.0, num_inference_steps=8, shift=3.0,
                  generator=torch.Generator("cpu").manual_seed(21), output_type="latent").audios  # fmt: skip
    assert torch.equal(ours, theirs)  # bit for bit: the same operations in the same order


def test_a_segment_edit_leaves_the_rest_bit_identical(tiny_backend, source):
    pipe = tiny_backend.load()
    req = request(prompt="heavy metal", repainting_start=1.0, repainting_end=2.5, n_min=2)
    with torch.no_grad():
        x_src = encode_audio(pipe, source)
        mask = segment_mask(pipe, req, x_src.shape[1])
    z = run_latents(pipe, req, x_src, mask)
    inside = mask[0, :, 0] > 0.5
    assert int(inside.sum()) == 37  # frames 25-61: int(1.0 · 25) to int(2.5 · 25)
    assert torch.equal(z[:, ~inside], x_src[:, ~inside])
    assert not torch.equal(z[:, inside], x_src[:, inside])

    take = flow_edit(pipe, req, source, RunControl())
    start, end = SR, round(2.5 * SR)
    assert np.array_equal(take[:, : start - FADE], source[:, : start - FADE])
    assert np.array_equal(take[:, end + FADE :], source[:, end + FADE :])
    # Inside, the edit: not what the same segment gives with the source's own description.
    unchanged = flow_edit(pipe, dataclasses.replace(req, prompt=req.source_prompt), source, RunControl())
    assert np.array_equal(unchanged[:, end + FADE :], take[:, end + FADE :])
    assert float(np.abs(take[:, start:end] - unchanged[:, start:end]).mean()) > 1e-5


def test_guidance_runs_on_a_base_checkpoint_and_not_on_turbo(tiny_backend, tiny_base_backend, source):
    turbo, base = tiny_backend.load(), tiny_base_backend.load()
    paper = request(**guidance_defaults("base"))
    assert (paper.source_guidance_scale, paper.guidance_scale) == (PAPER_SOURCE_GUIDANCE, PAPER_TARGET_GUIDANCE)
    with torch.no_grad():
        x_turbo, x_base = encode_audio(turbo, source), encode_audio(base, source)
    # Same text, different guidance: on base the two velocities differ, so the song moves.
    assert not torch.equal(run_latents(base, paper, x_base), x_base)
    # Same text and guidance: still exactly the source.
    same = request(source_guidance_scale=3.5, guidance_scale=3.5)
    assert torch.equal(run_latents(base, same, x_base), x_base)
    # Turbo is guidance-distilled: as in the pipeline, the scales are ignored.
    assert torch.equal(run_latents(turbo, paper, x_turbo), x_turbo)


def test_cancel_stops_within_one_model_call(tiny_backend, source):
    pipe = tiny_backend.load()
    messages: list[str] = []

    def on_progress(fraction: float, message: str) -> None:
        messages.append(message)
        if message.startswith("FlowEdit step 2"):
            control.cancel()

    control = RunControl(on_progress)
    with pytest.raises(Cancelled):
        flow_edit(pipe, request(prompt="polka"), source, control)
    assert messages[-1].startswith("FlowEdit step 2") and "Decoding audio…" not in messages
    assert control.steps_done == 1
    already = RunControl()
    already.cancel()
    with pytest.raises(Cancelled):
        flow_edit(pipe, request(prompt="polka"), source, already)


def test_defaults_follow_the_paper_scaled_to_the_steps():
    assert request().edit_steps == 5  # 33/50 of turbo's 8 steps
    assert request(num_inference_steps=50).edit_steps == 33  # the paper's own setting
    assert (request().n_min, request().n_avg) == (0, 1)
    assert guidance_defaults("turbo") == {"source_guidance_scale": 1.0, "guidance_scale": 1.0}
    assert FlowEditRequest.from_values({"src_audio": "a.wav", "prompt": "x", "n_max": 0}).n_max is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n_max": 9}, "n_max: .*got 9"),
        ({"n_min": 6}, "n_min: .*at most n_max, 5.*got 6"),
        ({"n_avg": 0}, "n_avg: .*got 0"),
        ({"source_guidance_scale": 25.0}, "source_guidance_scale: .*got 25\\b"),
        ({"repainting_start": 1.0, "repainting_end": 1.5}, "repainting_end: the segment 1-1.5 s is shorter"),
        ({"src_audio": ""}, "src_audio: no audio given"),
        ({"prompt": "", "lyrics": ""}, "prompt: describe what the song should become"),
    ],
)
def test_bad_requests_name_the_field_and_value(changes, message):
    with pytest.raises(ValueError, match=message):
        request(**changes)


def test_bad_source_is_refused_before_model_time(tiny_backend, source):
    pipe = tiny_backend.load()
    with pytest.raises(ValueError, match="repainting_end: 9 s is past the end of the source"):
        flow_edit(pipe, request(repainting_start=8.0, repainting_end=9.0), source, RunControl())
    with pytest.raises(ValueError, match=r"src_audio: expected stereo audio \[2, samples\]"):
        flow_edit(pipe, request(), source[0], RunControl())
    with pytest.raises(ValueError, match="seed: resolve"):
        flow_edit(pipe, request(seed=-1), source, RunControl())
