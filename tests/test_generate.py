from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from backend import Cancelled, RunControl
from modes import GenerateRequest
from outputs import SETTINGS_FILE

LATENT_FRAME = 1920  # samples per latent frame at 48 kHz


def request(**values) -> GenerateRequest:
    """The shortest song the studio takes, in two steps: what these tests check does not grow with either."""
    short = {"audio_duration": 10, "num_inference_steps": 2}
    return GenerateRequest.from_values({"prompt": "test song", "lyrics": "[verse]\nla la la", **short, **values})


@pytest.mark.parametrize("duration", [10, 12.5])
def test_generate_writes_48k_stereo_of_the_requested_length(studio, duration):
    progress: list[tuple[float, str]] = []
    run = studio.generate(
        request(audio_duration=duration, seed=3, num_inference_steps=4),
        RunControl(lambda f, m: progress.append((f, m))),
    )
    wav = run.takes[0].files["wav"]
    info = sf.info(wav)
    assert info.samplerate == 48_000
    assert info.channels == 2
    assert abs(info.frames - duration * 48_000) <= LATENT_FRAME
    for fmt in ("flac", "mp3"):
        assert run.takes[0].files[fmt].stat().st_size > 0
    data, _ = sf.read(wav)
    assert np.abs(data).max() > 0.1, "the tiny model outputs noise, not silence"
    # Progress went through every denoising step and ended at 1.0.
    steps = [m for _, m in progress if m.startswith("Denoising step")]
    assert len(steps) == run.settings["request"]["num_inference_steps"] - 1
    assert progress[-1] == (1.0, "Done")
    assert [f for f, _ in progress] == sorted(f for f, _ in progress)


def test_same_seed_gives_identical_audio(studio):
    first = studio.generate(request(seed=1234), RunControl())
    second = studio.generate(request(seed=1234), RunControl())
    other = studio.generate(request(seed=1235), RunControl())
    a, _ = sf.read(first.takes[0].files["wav"], dtype="int32")
    b, _ = sf.read(second.takes[0].files["wav"], dtype="int32")
    c, _ = sf.read(other.takes[0].files["wav"], dtype="int32")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert first.folder != second.folder


def test_saved_settings_reproduce_the_run(studio):
    first = studio.generate(request(), RunControl())  # random seed, resolved and recorded
    saved = json.loads((first.folder / SETTINGS_FILE).read_text())
    assert saved["request"]["seed"] >= 0
    assert saved["takes"][0]["seed"] == saved["request"]["seed"]
    again = studio.generate(GenerateRequest.from_values(saved["request"]), RunControl())
    a, _ = sf.read(first.takes[0].files["flac"], dtype="int32")
    b, _ = sf.read(again.takes[0].files["flac"], dtype="int32")
    assert np.array_equal(a, b)


def test_batch_gives_one_take_per_seed(studio):
    run = studio.generate(request(seed=10, batch_size=2), RunControl())
    assert [take.seed for take in run.takes] == [10, 11]
    a, _ = sf.read(run.takes[0].files["wav"])
    b, _ = sf.read(run.takes[1].files["wav"])
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_cancel_stops_within_one_step_and_saves_nothing(studio):
    steps = 8
    control = RunControl()
    cancel_at = 3

    def on_progress(fraction: float, message: str) -> None:
        if message == f"Denoising step {cancel_at}/{steps}":
            control.cancel()

    control._on_progress = on_progress
    with pytest.raises(Cancelled):
        studio.generate(request(seed=1, num_inference_steps=steps), control)
    assert control.steps_done <= cancel_at + 1
    assert not studio.store.root.exists() or not any(studio.store.root.iterdir())


def test_cancel_before_start_spends_no_model_time(studio):
    control = RunControl()
    control.cancel()
    with pytest.raises(Cancelled):
        studio.generate(request(seed=1), control)
    assert control.steps_done == 0


def test_turbo_runs_without_guidance(studio):
    run = studio.generate(request(seed=2, guidance_scale=7.0), RunControl())
    assert run.settings["request"]["guidance_scale"] == 1.0
    assert run.settings["model"] == {
        "label": "tiny",
        "source": studio.backend.spec.source,
        "variant": "turbo",
        "test_model": True,
    }


def test_instrumental_run_records_the_flag(studio):
    run = studio.generate(request(seed=4, instrumental=True), RunControl())
    assert run.settings["request"]["instrumental"] is True
    assert sf.info(run.takes[0].files["wav"]).frames > 0


def test_defaults_follow_the_checkpoint(studio):
    defaults = studio.defaults()
    assert defaults.num_inference_steps == studio.backend.spec.defaults.num_inference_steps
    assert defaults.shift == studio.backend.spec.defaults.shift


def test_mastering_brings_takes_to_the_target_and_records_the_figures(studio):
    run = studio.generate(request(seed=9, master=True, target_lufs=-16, true_peak_dbtp=-1.5), RunControl())
    figures = run.settings["mastering"][0]
    assert abs(figures["after"]["lufs"] - (-16)) <= 0.5
    assert figures["after"]["true_peak_dbtp"] <= -1.5 + 0.01
    plain = studio.generate(request(seed=9), RunControl())
    assert plain.settings["mastering"] is None
    a, _ = sf.read(run.takes[0].files["wav"])
    b, _ = sf.read(plain.takes[0].files["wav"])
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_export_settings_fades_and_trim_shape_the_files(studio):
    from mutagen.mp3 import MP3
    from mutagen.oggopus import OggOpus

    run = studio.generate(
        request(seed=11, wav_bit_depth="16", mp3_bitrate_kbps=192, opus=True, fade_in_s=1.0, fade_out_s=2.0),
        RunControl(),
    )
    files = run.takes[0].files
    assert set(files) == {"wav", "flac", "mp3", "opus"}
    assert sf.info(files["wav"]).subtype == "PCM_16"
    assert MP3(files["mp3"]).info.bitrate == 192_000
    assert OggOpus(files["opus"])["SEED"] == ["11"]
    data, _ = sf.read(files["flac"])
    assert np.abs(data[:10]).max() < 1e-3, "the fade-in starts from silence"
    assert np.abs(data[-10:]).max() < 1e-3, "the fade-out ends in silence"
    float_run = studio.generate(request(seed=11, wav_bit_depth="32f"), RunControl())
    assert sf.info(float_run.takes[0].files["wav"]).subtype == "FLOAT"


def test_bad_export_settings_are_refused():
    with pytest.raises(ValueError, match=r"^wav_bit_depth:"):
        request(wav_bit_depth="12")
    with pytest.raises(ValueError, match=r"^mp3_bitrate_kbps: must be one of 128, 192, 256, 320, got 300"):
        request(mp3_bitrate_kbps=300)
    with pytest.raises(ValueError, match=r"^fade_out_s:"):
        request(fade_out_s=-1)
