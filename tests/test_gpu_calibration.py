"""The ZeroGPU estimate calibrates itself from the stage timings real runs measured."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend import RunControl
from modes import GenerateRequest
from serving import zerogpu
from validation import MAX_DURATION_S, MIN_DURATION_S


def song(seconds: float = 10.0, steps: int = 4, seed: int = 7, batch_size: int = 1) -> GenerateRequest:
    return GenerateRequest(
        prompt="calm piano",
        lyrics="[verse]\nla la la",
        audio_duration=seconds,
        num_inference_steps=steps,
        seed=seed,
        batch_size=batch_size,
    )


def calibration_of(studio, tmp_path, min_samples: int = zerogpu.MIN_SAMPLES) -> zerogpu.Calibration:
    key = zerogpu.calibration_for(studio).key
    return zerogpu.Calibration(tmp_path / "timings.json", key, min_samples=min_samples)


@pytest.fixture(autouse=True)
def detached():
    yield
    zerogpu.attach(None)


def test_a_run_records_its_render_stages(studio):
    run = studio.generate(song(), RunControl())
    timings = run.settings["timings_s"]
    assert timings["dit"] > 0 and timings["decode"] > 0 and timings["load"] >= 0
    assert timings["dit"] + timings["decode"] <= timings["generate"] + 0.01


def test_rates_from_a_real_run_reproduce_its_measured_seconds(studio, tmp_path):
    request = song(batch_size=2)
    run = studio.generate(request, RunControl())
    calibration = calibration_of(studio, tmp_path, min_samples=1)
    calibration.record(run.settings)
    rates = calibration.rates()
    assert set(rates.measured) == {"dit_s_per_step_min", "vae_s_per_min"}
    measured = run.settings["timings_s"]["dit"] + run.settings["timings_s"]["decode"]
    # Without warm-up, the calibrated prediction for the same request is the measured render, with margin.
    predicted = zerogpu.predict_seconds(request, rates=rates, warm_up=0.0)
    assert predicted == pytest.approx(zerogpu.MARGIN * measured, rel=0.01)
    # Twice the song at twice the steps: four times the DiT work and twice the decode.
    assert zerogpu.predict_seconds(song(20.0, 8, batch_size=2), rates=rates, warm_up=0.0) >= 2 * predicted * 0.999


def test_measured_rates_replace_the_priors_only_after_enough_runs(studio, tmp_path):
    run = studio.generate(song(), RunControl())
    calibration = calibration_of(studio, tmp_path)
    zerogpu.attach(studio, calibration)
    prior = zerogpu.predict_seconds(song(60.0, 8))
    slow = copy.deepcopy(run.settings)
    slow["timings_s"] |= {"dit": 40.0, "decode": 12.0}  # a GPU far slower than the priors assume
    for _ in range(zerogpu.MIN_SAMPLES - 1):
        calibration.record(slow)
    assert calibration.rates().measured == () and zerogpu.predict_seconds(song(60.0, 8)) == prior
    calibration.record(slow)
    assert zerogpu.predict_seconds(song(60.0, 8)) > prior
    assert zerogpu.estimate_gpu_seconds(song(600.0, 50)) == zerogpu.MAX_GPU_S


def test_timings_persist_and_other_models_or_broken_files_are_ignored(studio, tmp_path):
    run = studio.generate(song(), RunControl())
    calibration = calibration_of(studio, tmp_path, min_samples=1)
    other = copy.deepcopy(run.settings)
    other["device"] = "cuda:7"
    calibration.record(other)
    assert calibration.rates().measured == ()
    calibration.record(run.settings)
    reloaded = calibration_of(studio, tmp_path, min_samples=1)
    assert reloaded.rates() == calibration.rates() and reloaded.rates().measured
    elsewhere = zerogpu.Calibration(tmp_path / "timings.json", "another model on cuda", min_samples=1)
    assert elsewhere.rates() == zerogpu.Rates()
    (tmp_path / "timings.json").write_text("{not json")
    assert calibration_of(studio, tmp_path, min_samples=1).rates() == zerogpu.Rates()


def test_a_planned_run_calibrates_the_planner(thinking_studio, tmp_path):
    request = GenerateRequest(prompt="lofi beat", lyrics="[verse]\nhello", audio_duration=10, think=True, seed=3)
    run = thinking_studio.generate(request, RunControl())
    calibration = calibration_of(thinking_studio, tmp_path, min_samples=1)
    calibration.record(run.settings)
    planner = run.settings["plan"]["planner"]
    assert calibration.rates().planner_s_per_token == pytest.approx(
        zerogpu.MARGIN * planner["seconds"] / planner["tokens"]
    )


def test_run_on_zerogpu_feeds_the_runs_it_returns_to_the_calibration(studio, tmp_path):
    calibration = calibration_of(studio, tmp_path)
    zerogpu.attach(studio, calibration)
    run = zerogpu.run_on_zerogpu(song(seed=11))
    assert (run.folder / "settings.json").is_file()
    assert len(calibration.samples["dit_s_per_step_min"]) == 1
    stored = json.loads((tmp_path / "timings.json").read_text())
    assert stored["key"] == calibration.key and len(stored["samples"]["vae_s_per_min"]) == 1
    assert len(studio.store.list_runs()) == 1, "the timings file is not a run in the library"


rates = st.floats(1e-4, 5.0)
durations = st.floats(MIN_DURATION_S, MAX_DURATION_S)


@settings(max_examples=200, deadline=None)
@given(rates, rates, rates, durations, durations, st.integers(1, 100), st.integers(1, 100), st.booleans())
def test_calibrated_estimates_grow_with_the_song_and_stay_clamped(dit, vae, planner, d1, d2, s1, s2, think):
    (d1, d2), (s1, s2) = sorted((d1, d2)), sorted((s1, s2))
    calibration = zerogpu.Calibration(None, "m on cuda", min_samples=1)
    calibration.samples = {"dit_s_per_step_min": [dit], "vae_s_per_min": [vae], "planner_s_per_token": [planner]}
    zerogpu.attach(None, calibration)
    low = zerogpu.estimate_gpu_seconds(song(d1, s1), think=think)
    high = zerogpu.estimate_gpu_seconds(song(d2, s2), think=think)
    assert zerogpu.MIN_GPU_S <= low <= high <= zerogpu.MAX_GPU_S
    assert zerogpu.predict_seconds(song(d2, s2), think=think) >= zerogpu.predict_seconds(song(d1, s1), think=think)


def test_source_modes_are_estimated_from_the_source_length(tmp_path):
    import numpy as np
    import soundfile as sf

    from modes import EditRequest, ExtendRequest

    src = tmp_path / "src.wav"
    sf.write(src, np.zeros((48_000 * 30, 2), dtype="float32"), 48_000)
    # Extend and Edit carry no audio_duration: the source's 30 s is what the model renders.
    assert zerogpu.song_minutes(ExtendRequest(prompt="x", src_audio=str(src), extend_seconds=15)) == 0.75
    assert zerogpu.song_minutes(EditRequest(prompt="x", src_audio=str(src))) == 0.5
    assert zerogpu.estimate_gpu_seconds(EditRequest(prompt="x", src_audio=str(src))) >= zerogpu.MIN_GPU_S
