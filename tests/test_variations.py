"""Vary on the tiny model: the parent's noise reproduced exactly, and blended with fresh noise."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from backend import RunControl
from modes import REQUEST_TYPES, GenerateRequest
from variations import (
    DEFAULT_VARIANCE,
    VaryRequest,
    initial_noise,
    mix_noise,
    plan_variation,
    variation_latents,
    vary_kwargs,
)

DURATION_S = 4.0
STEPS = 8


def song(batch_size: int = 1, seed: int = 11) -> GenerateRequest:
    # Built without validate(): the form's 10 s minimum would only slow these runs down.
    return GenerateRequest(prompt="bright synth pop", lyrics="[verse]\nla la", audio_duration=DURATION_S, seed=seed,
                           batch_size=batch_size, num_inference_steps=STEPS)  # fmt: skip


def latents_of(pipe, request: GenerateRequest, **extra) -> torch.Tensor:
    generators = [torch.Generator("cpu").manual_seed(s) for s in request.take_seeds()]
    kwargs = {**request.pipeline_kwargs(), **extra}
    return pipe(**kwargs, generator=generators, output_type="latent").audios


def test_initial_noise_is_the_pipelines_own_draw(tiny_backend):
    pipe = tiny_backend.load()
    noise = initial_noise(pipe, DURATION_S, [11, 12])
    assert tuple(noise.shape) == (2, 100, 8)  # 4 s at 25 frames a second, the tiny DiT's 8 channels
    # A plain per-seed draw, as the backend's CPU generators make it ...
    expected = torch.cat([torch.randn((1, 100, 8), generator=torch.Generator().manual_seed(s)) for s in (11, 12)])
    assert torch.equal(noise, expected)
    # ... and the pipeline given it produces exactly what the pipeline drew itself.
    request = song(batch_size=2)
    assert torch.equal(latents_of(pipe, request, latents=noise), latents_of(pipe, request))


def test_distance_to_the_parent_grows_with_the_variance(tiny_backend):
    pipe = tiny_backend.load()
    request = song(seed=3)
    parent = latents_of(pipe, request)
    variances = [0.0, 0.25, 0.5, 0.75, 1.0]
    distances = []
    for variance in variances:
        runs = [
            latents_of(pipe, request, latents=variation_latents(pipe, DURATION_S, 3, new_seed, variance))
            for new_seed in (100, 200, 300)
        ]
        distances.append(np.mean([float((run - parent).pow(2).mean().sqrt()) for run in runs]))
    assert distances[0] == 0.0
    assert all(a < b for a, b in itertools.pairwise(distances)), distances
    # Variance 1 is a fresh take: exactly what the new seed makes on its own.
    fresh = variation_latents(pipe, DURATION_S, 3, 100, 1.0)
    assert torch.equal(latents_of(pipe, request, latents=fresh), latents_of(pipe, song(seed=100)))


def test_mixed_noise_stays_unit_variance():
    generator = torch.Generator().manual_seed(0)
    original = torch.randn(1_000_000, generator=generator)
    fresh = torch.randn(1_000_000, generator=generator)
    for variance in (0.1, 0.3, 0.5, 0.7, 0.9):
        mixed = mix_noise(original, fresh, variance)
        assert float(mixed.std()) == pytest.approx(1.0, abs=0.005), variance
        assert float(mixed.mean()) == pytest.approx(0.0, abs=0.005), variance
        # The share of the parent left in the mix is cos(v·π/2).
        correlation = float(torch.corrcoef(torch.stack([mixed, original]))[0, 1])
        assert correlation == pytest.approx(math.cos(variance * math.pi / 2), abs=0.005)
    assert torch.equal(mix_noise(original, fresh, 0.0), original)
    assert torch.equal(mix_noise(original, fresh, 1.0), fresh)
    with pytest.raises(ValueError, match="shapes differ"):
        mix_noise(original, fresh[:10], 0.5)


def test_bf16_noise_keeps_its_dtype():
    original = torch.randn(4, 8, dtype=torch.bfloat16)
    fresh = torch.randn(4, 8, dtype=torch.bfloat16)
    assert mix_noise(original, fresh, 0.5).dtype == torch.bfloat16


def test_a_run_with_source_audio_gets_the_vaes_frame_count(tiny_backend):
    """With source audio the frame count is the VAE's (whole frames), not ceil(duration · 25).

    Such runs draw the VAE posterior sample from the global torch RNG, so only with that
    RNG seeded alike does variance 0 reproduce them.
    """
    pipe = tiny_backend.load()
    samples = round(DURATION_S * 48_000) + 1_000  # 100.5 frames: the VAE keeps 100
    source = torch.from_numpy(0.3 * np.sin(np.linspace(0, 800, samples, dtype=np.float32))).expand(2, -1)
    kwargs = {
        "prompt": "rock", "audio_duration": samples / 48_000, "num_inference_steps": 2, "src_audio": source,
        "task_type": "repaint", "repainting_start": 1.0, "repainting_end": 2.0, "output_type": "latent",
    }  # fmt: skip
    latents = variation_latents(pipe, kwargs["audio_duration"], 5, 6, 0.0, src_samples=samples)
    assert latents.shape[1] == 100
    torch.manual_seed(0)
    parent = pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(5)).audios
    torch.manual_seed(0)
    varied = pipe(**kwargs, latents=latents).audios
    assert torch.equal(varied, parent)


def test_a_saved_run_varied_at_zero_gives_back_its_takes(studio):
    pipe = studio.backend.load()
    # DCW off: the takes are compared with a plain backend.generate run (no sampling plan).
    parent = GenerateRequest(
        prompt="lofi piano", audio_duration=10, seed=77, batch_size=2, wav_bit_depth="32f", dcw_enabled=False
    )
    run = studio.generate(parent, RunControl())
    request = VaryRequest(parent_run_id=run.run_id, variance=0.0, seed=5).validate()
    plan = plan_variation(run.settings, request, folder=run.folder)
    assert (plan.mode, plan.parent_seeds, plan.seeds) == ("generate", [77, 78], [5, 6])
    rebuilt = REQUEST_TYPES[plan.mode].from_values(plan.request)
    assert rebuilt.seed == 5 and rebuilt.take_seeds() == plan.seeds
    extra = vary_kwargs(pipe, rebuilt.audio_duration, plan.parent_seeds, plan.seeds, plan.variance)
    takes = studio.backend.generate({**rebuilt.pipeline_kwargs(), **extra}, plan.seeds, RunControl())
    for take, saved in zip(takes, run.takes, strict=True):
        stored = sf.read(saved.files["wav"], dtype="float32", always_2d=True)[0].T
        assert np.array_equal(take, stored)


def test_vary_request_validation_names_the_field_and_value():
    assert VaryRequest("run-1").variance == DEFAULT_VARIANCE
    for bad, field in [
        (dict(parent_run_id="run-1", variance=1.5), "variance: .*1.5"),
        (dict(parent_run_id="run-1", variance=-0.1), "variance: .*-0.1"),
        (dict(parent_run_id="run-1", variance=float("nan")), "variance: .*nan"),
        (dict(parent_run_id=" ", variance=0.5), "parent_run_id"),
        (dict(parent_run_id="run-1", variance=0.5, seed=2**32), "seed: .*4,294,967,296"),
    ]:
        with pytest.raises(ValueError, match=field):
            VaryRequest(**bad).validate()
    request = VaryRequest.from_values({"parent_run_id": "run-1", "variance": "0.4", "seed": ""})
    assert (request.variance, request.seed) == (0.4, None)
    assert request.resolve_seed().seed is not None
    with pytest.raises(ValueError, match="varience: not a setting"):
        VaryRequest.from_values({"parent_run_id": "run-1", "varience": 0.4})
