"""The DiT-side semantics of ACE-Step 1.5 as the official code has them, checked by recording the DiT's calls.

The tiny random-weight pipelines (conftest) hear only noise, but which steps are guided, which
condition each call gets, the timesteps and the per-step latent corrections are structural: the
recorder (``dit_recorder``) sees them on every DiT call.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from dit_recorder import DitRecorder

from backend import RunControl
from modes import CoverRequest, GenerateRequest
from outputs import load_settings
from sampling.dcw import DCW_HIGH_SCALER, DCW_SCALER, dcw_correct, haar_split
from sampling.plan import plan_sampling
from sampling.schedule import pipeline_cfg_interval, plan_schedule

# Official SHIFT_TIMESTEPS, read from ace-step/ACE-Step-1.5
# acestep/models/turbo/modeling_acestep_v15_turbo.py, AceStepConditionGenerationModel.generate_audio.
OFFICIAL_TURBO_TABLES = {
    1.0: [1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125],
    2.0: [1.0, 0.9333333333333333, 0.8571428571428571, 0.7692307692307693,
          0.6666666666666666, 0.5454545454545454, 0.4, 0.2222222222222222],
    3.0: [1.0, 0.9545454545454546, 0.9, 0.8333333333333334, 0.75, 0.6428571428571429, 0.5, 0.3],
}  # fmt: skip
SHORT = {"prompt": "lofi piano", "audio_duration": 10, "seed": 3}


def render(backend, request, step_hooks=(), kwargs_extra=None, prepared_kwargs=None):
    """What Studio.generate does for the DiT: normalise, plan, run; returns (audio, recorder, plan)."""
    request = backend.normalise(request.validate())
    kwargs = {**request.pipeline_kwargs(), **(prepared_kwargs or {})}
    seeds = request.take_seeds()
    plan = plan_sampling(request, backend.variant, kwargs, seeds)
    recorder = DitRecorder(takes=len(seeds))
    with recorder.on(backend.load()):
        audio = backend.generate(kwargs, seeds, RunControl(), step_hooks=step_hooks, plan=plan)
    return audio, recorder, plan


@pytest.mark.parametrize("interval", [(0.0, 1.0), (0.5, 1.0), (0.0, 0.5), (0.3, 0.8), (0.9, 0.95)])
def test_guided_calls_are_exactly_the_steps_whose_t_lies_in_the_interval(tiny_base_backend, interval):
    start, end = interval
    request = GenerateRequest(
        **SHORT, num_inference_steps=8, guidance_scale=3.0, cfg_interval_start=start, cfg_interval_end=end
    )
    _, recorder, plan = render(tiny_base_backend, request)
    assert recorder.timesteps == [round(t, 6) for t in plan.schedule.timesteps]
    for call in recorder.calls:
        assert call.guided == (start <= call.timestep <= end), (call, interval)
        assert call.batch == (2 if call.guided else 1)
    assert any(call.guided for call in recorder.calls) and (interval == (0.0, 1.0) or not all(
        call.guided for call in recorder.calls
    ))  # fmt: skip


def test_the_default_interval_hands_diffusers_what_it_had():
    assert pipeline_cfg_interval(0.0, 1.0) == {"cfg_interval_start": 0.0, "cfg_interval_end": 1.0}
    assert GenerateRequest(prompt="x").pipeline_kwargs()["cfg_interval_end"] == 1.0


def write_source(path, seconds=10.0):
    t = np.arange(int(seconds * 48_000)) / 48_000
    sf.write(path, np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * 2, axis=1).astype(np.float32), 48_000)
    return str(path)


def test_cover_at_a_quarter_runs_two_cover_steps_then_six_text_to_music(studio, tmp_path):
    request = CoverRequest(
        src_audio=write_source(tmp_path / "src.wav"), prompt="jazz", seed=5, audio_cover_strength=0.25
    )
    prepared = studio._prepare(request.validate())
    _, recorder, plan = render(studio.backend, request, prepared_kwargs=prepared.kwargs)
    assert len(recorder.calls) == 8  # diffusers' blend would make 16
    assert [call.condition for call in recorder.calls] == ["cover"] * 2 + ["text2music"] * 6
    assert recorder.timesteps == [round(t, 6) for t in OFFICIAL_TURBO_TABLES[3.0]]  # one schedule across both calls
    assert plan.record()["calls"] == [{"condition": "cover", "steps": 2}, {"condition": "text2music", "steps": 6}]


def test_cover_noise_strength_starts_later_from_the_source(studio, tmp_path):
    request = CoverRequest(
        src_audio=write_source(tmp_path / "src.wav"), prompt="jazz", seed=5, cover_noise_strength=0.5
    )
    prepared = studio._prepare(request.validate())
    _, recorder, _ = render(studio.backend, request, prepared_kwargs=prepared.kwargs)
    assert recorder.timesteps == [0.5, 0.3]  # the table's timestep nearest 1 - 0.5, and on from there
    assert {call.condition for call in recorder.calls} == {"cover"}
    with pytest.raises(ValueError, match=r"cover_noise_strength: .*1\.5"):
        CoverRequest(src_audio=request.src_audio, cover_noise_strength=1.5).validate()


@pytest.mark.parametrize("shift", [1.0, 2.0, 3.0])
def test_turbo_runs_the_official_eight_step_tables(tiny_backend, shift):
    _, recorder, plan = render(tiny_backend, GenerateRequest(**SHORT, num_inference_steps=8, shift=shift))
    assert list(plan.schedule.timesteps) == OFFICIAL_TURBO_TABLES[shift]
    assert recorder.timesteps == [round(t, 6) for t in OFFICIAL_TURBO_TABLES[shift]]
    assert plan.record()["notes"] == []


def test_turbo_snaps_the_shift_and_maps_other_step_counts_with_the_reason():
    snapped = plan_schedule("turbo", 8, 2.4)
    assert list(snapped.timesteps) == OFFICIAL_TURBO_TABLES[2.0] and "shift 2.4 ran as 2" in snapped.notes[0]
    mapped = plan_schedule("turbo", 16, 3.0)
    valid = {t for table in OFFICIAL_TURBO_TABLES.values() for t in table}
    assert set(mapped.timesteps) <= valid and "16 steps ran as" in mapped.notes[-1]
    assert list(plan_schedule("base", 8, 3.0).timesteps) == pytest.approx(OFFICIAL_TURBO_TABLES[3.0])


def test_dcw_is_on_by_default_on_turbo_only(tiny_backend, tiny_base_backend):
    assert tiny_backend.normalise(GenerateRequest(prompt="x")).dcw_enabled is True
    assert tiny_base_backend.normalise(GenerateRequest(prompt="x")).dcw_enabled is False
    assert tiny_backend.normalise(GenerateRequest(prompt="x", dcw_enabled=False)).dcw_enabled is False


def test_dcw_moves_each_haar_band_away_from_the_prediction_by_its_share():
    x, denoised = torch.randn(1, 8, 4), torch.randn(1, 8, 4)
    corrected = dcw_correct(x, denoised, 0.5)
    (x_low, x_high), (d_low, d_high) = haar_split(x), haar_split(denoised)
    c_low, c_high = haar_split(corrected)
    assert torch.allclose(c_low, x_low + 0.5 * DCW_SCALER * (x_low - d_low), atol=1e-6)
    assert torch.allclose(c_high, x_high + 0.5 * DCW_HIGH_SCALER * (x_high - d_high), atol=1e-6)
    assert dcw_correct(x[:, :7], denoised[:, :7], 0.5).shape == (1, 7, 4)  # an odd frame count is padded, then cut
    assert torch.equal(dcw_correct(x, denoised, 0.0), x)  # nothing at t = 0
    assert torch.allclose(dcw_correct(x, x, 0.9), x, atol=1e-6)  # nothing where x is the prediction


def test_dcw_changes_each_step_by_the_correction_and_nothing_else(tiny_backend):
    seen: dict[bool, list[torch.Tensor]] = {}
    for dcw in (False, True):
        steps: list[torch.Tensor] = []
        hook = lambda step, t, latents, steps=steps: steps.append(latents.clone()) or latents  # noqa: E731
        render(tiny_backend, GenerateRequest(**SHORT, num_inference_steps=8, dcw_enabled=dcw), step_hooks=[hook])
        seen[dcw] = steps
    plain, corrected = seen[False], seen[True]
    # Step 0 starts both runs from the same noise: the DCW step is the plain step corrected against its x0.
    noise = torch.randn((1, *plain[0].shape[1:]), generator=torch.Generator("cpu").manual_seed(3))
    t0, t1 = OFFICIAL_TURBO_TABLES[3.0][:2]
    velocity = (noise - plain[0]) / (t0 - t1)
    assert torch.allclose(corrected[0], dcw_correct(plain[0], noise - t0 * velocity, t0), atol=1e-5)
    assert not torch.allclose(corrected[-2], plain[-2])
    assert corrected[0].shape == plain[0].shape and all(torch.isfinite(step).all() for step in corrected)


def test_sde_is_reproducible_from_its_seed_and_differs_from_ode(tiny_backend):
    request = GenerateRequest(**SHORT, num_inference_steps=4, infer_method="sde", batch_size=2)
    first, recorder, _ = render(tiny_backend, request)
    again, _, _ = render(tiny_backend, request)
    ode, _, _ = render(tiny_backend, GenerateRequest(**SHORT, num_inference_steps=4, batch_size=2))
    assert np.array_equal(first, again)
    assert not np.allclose(first, ode)
    # Each take's noise is its own seed's: take 2 of seed 3 is take 1 of seed 4.
    alone, _, _ = render(
        tiny_backend, GenerateRequest(**{**SHORT, "seed": 4}, num_inference_steps=4, infer_method="sde")
    )
    assert np.allclose(first[1], alone[0], atol=1e-5)
    assert len(recorder.calls) == 4


def test_adg_replaces_apg_on_the_guided_steps(tiny_base_backend):
    common = dict(**SHORT, num_inference_steps=4, guidance_scale=3.0, cfg_interval_start=0.6)
    apg, apg_calls, _ = render(tiny_base_backend, GenerateRequest(**common))
    adg, adg_calls, _ = render(tiny_base_backend, GenerateRequest(**common, guidance_method="adg"))
    assert [c.guided for c in adg_calls.calls] == [c.guided for c in apg_calls.calls] == [True, True, True, False]
    assert np.isfinite(adg).all() and not np.allclose(adg, apg)
    with pytest.raises(ValueError, match=r"guidance_method: .*'cfg'"):
        GenerateRequest(prompt="x", guidance_method="cfg").validate()


def test_eight_takes_in_one_run(studio):
    run = studio.generate(
        GenerateRequest(**SHORT, num_inference_steps=2, batch_size=8, mp3_bitrate_kbps=128), RunControl()
    )
    assert len(run.takes) == 8 and [take.seed for take in run.takes] == list(range(3, 11))
    assert run.settings["sampler"]["timesteps"] == [1.0, 0.75]
    with pytest.raises(ValueError, match=r"batch_size: .*9"):
        GenerateRequest(prompt="x", batch_size=9).validate()


def test_a_run_saved_before_the_official_semantics_loads_as_it_was_made(tmp_path):
    old = {"mode": "generate", "request": {"prompt": "x", "cfg_interval_start": 0.2, "cfg_interval_end": 0.7}}
    path = tmp_path / "settings.json"
    path.write_text(__import__("json").dumps(old))
    request = load_settings(path)["request"]
    assert request["dcw_enabled"] is False
    assert (request["cfg_interval_start"], request["cfg_interval_end"]) == pytest.approx((0.3, 0.8))
    new = GenerateRequest.from_values(request).validate()  # guided where diffusers guided 0.2 <= 1 - t <= 0.7
    mirrored = pipeline_cfg_interval(*new.cfg_interval)
    assert mirrored == pytest.approx({"cfg_interval_start": 0.2, "cfg_interval_end": 0.7}, abs=1e-5)
