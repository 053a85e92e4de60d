"""Cover, Extend and Edit end to end on the tiny model, with audio files made here."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audio_io import load_audio
from backend import RunControl
from export import WAV_SUBTYPE
from modes import CoverRequest, EditRequest, ExtendRequest
from rework import SPLICE_FADE_S
from ui.takes import run_summary

SR = 48_000
FADE = round(SPLICE_FADE_S * SR)


def write_song(path: Path, seconds: float, rate: int = 48_000, channels: int = 2, kind: str = "sine") -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    if kind == "sine":
        mono = 0.3 * np.sin(2 * np.pi * 220 * t)
    elif kind == "noise":
        mono = 0.2 * rng.standard_normal(t.shape)
    else:
        mono = np.zeros_like(t)
    data = np.stack([mono * (1 - 0.2 * c) for c in range(channels)], axis=1)
    sf.write(path, data, rate)
    return path


def read_take(run) -> np.ndarray:
    """The saved WAV's samples as integers, exactly as stored."""
    data, rate = sf.read(run.takes[0].files["wav"], dtype="int32", always_2d=True)
    assert rate == SR
    return data.T


def quantise(audio: np.ndarray) -> np.ndarray:
    """What the studio's 24-bit WAV writer stores for these float samples."""
    buffer = io.BytesIO()
    sf.write(buffer, audio.T, SR, subtype=WAV_SUBTYPE, format="WAV")
    buffer.seek(0)
    return sf.read(buffer, dtype="int32", always_2d=True)[0].T


def test_cover_keeps_the_source_length(studio, tmp_path):
    src = write_song(tmp_path / "src.wav", 10.3, rate=22_050, channels=1)
    run = studio.generate(CoverRequest(prompt="jazz", src_audio=str(src), seed=1), RunControl())
    assert read_take(run).shape == (2, round(10.3 * SR))
    assert run.settings["output"]["duration_s"] == pytest.approx(10.3, abs=1e-3)
    assert "cover, 1 take(s), 10.3 s" in run_summary(run)
    assert run.settings["inputs"] == {"src_audio": "source.wav"}
    assert (run.folder / "source.wav").read_bytes() == src.read_bytes()


def test_cover_with_duration_and_timbre_reference(studio, tmp_path):
    src = write_song(tmp_path / "src.flac", 12, rate=44_100)
    ref = write_song(tmp_path / "ref.wav", 3, kind="noise")
    request = CoverRequest(
        prompt="rock", src_audio=str(src), reference_audio=str(ref), audio_duration=15, audio_cover_strength=0.6, seed=2
    )
    run = studio.generate(request, RunControl())
    assert read_take(run).shape == (2, 15 * SR)
    assert set(run.settings["inputs"]) == {"src_audio", "reference_audio"}


@pytest.mark.parametrize(("rate", "fmt"), [(44_100, "flac"), (48_000, "wav"), (22_050, "mp3")])
def test_extend_after_appends_and_keeps_the_seed(studio, tmp_path, rate, fmt):
    src = write_song(tmp_path / f"seed.{fmt}", 10, rate=rate, kind="noise")
    seed = load_audio(str(src), label="Source song").audio
    n = seed.shape[-1]
    run = studio.generate(
        ExtendRequest(prompt="more", src_audio=str(src), extend_seconds=5, extend_where="after", seed=3), RunControl()
    )
    take = read_take(run)
    assert take.shape == (2, n + 5 * SR)
    assert np.array_equal(take[:, : n - FADE], quantise(seed[:, : n - FADE]))
    assert np.abs(take[:, n:]).max() > 0, "the new part is not silence"


def test_extend_before_prepends_and_keeps_the_seed(studio, tmp_path):
    src = write_song(tmp_path / "seed.wav", 10, channels=1)
    seed = load_audio(str(src), label="Source song").audio
    run = studio.generate(
        ExtendRequest(prompt="intro", src_audio=str(src), extend_seconds=6, extend_where="before", seed=4), RunControl()
    )
    take = read_take(run)
    added = 6 * SR
    assert take.shape == (2, added + seed.shape[-1])
    assert np.array_equal(take[:, added + FADE :], quantise(seed[:, FADE:]))


def test_finished_extend_is_bit_identical_outside_the_fade(studio, tmp_path):
    """Checked on the float take before any file encoding: the splice itself changes nothing."""
    from rework import prepare

    src = write_song(tmp_path / "seed.wav", 10, kind="noise")
    loaded = load_audio(str(src), label="Source song")
    request = ExtendRequest(prompt="x", src_audio=str(src), extend_seconds=5, seed=5).validate()
    prepared = prepare(request, loaded, None)
    raw = studio.backend.generate({**request.pipeline_kwargs(), **prepared.kwargs}, request.take_seeds(), RunControl())
    take = prepared.finish(raw[0])
    n = loaded.audio.shape[-1]
    assert np.array_equal(take[:, : n - FADE], loaded.audio[:, : n - FADE])
    assert prepared.kwargs["repainting_start"] == pytest.approx(10.0)
    assert prepared.kwargs["audio_duration"] == pytest.approx(15.0)


def test_edit_leaves_everything_outside_the_segment_untouched(studio, tmp_path):
    from rework import prepare

    src = write_song(tmp_path / "song.wav", 12, kind="noise")
    loaded = load_audio(str(src), label="Source song")
    request = EditRequest(
        prompt="x", lyrics="[verse]\nnew words", src_audio=str(src), repainting_start=4, repainting_end=8, seed=6
    ).validate()
    prepared = prepare(request, loaded, None)
    raw = studio.backend.generate({**request.pipeline_kwargs(), **prepared.kwargs}, request.take_seeds(), RunControl())
    take = prepared.finish(raw[0])
    start, end = 4 * SR, 8 * SR
    assert take.shape == loaded.audio.shape
    assert np.array_equal(take[:, : start - FADE], loaded.audio[:, : start - FADE])
    assert np.array_equal(take[:, end + FADE :], loaded.audio[:, end + FADE :])
    assert not np.array_equal(take[:, start:end], loaded.audio[:, start:end])

    run = studio.generate(request, RunControl())
    saved = read_take(run)
    assert np.array_equal(saved[:, end + FADE :], quantise(loaded.audio[:, end + FADE :]))


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (EditRequest(prompt="x", repainting_start=5, repainting_end=20), r"^repainting_end: 20 s is past the end"),
        (EditRequest(prompt="x", repainting_start=5, repainting_end=5), r"^repainting_end: 5 s must be after"),
        (EditRequest(prompt="x", repainting_start=5, repainting_end=5.5), r"^repainting_end: the segment"),
        (ExtendRequest(prompt="x", extend_seconds=2), r"^extend_seconds: must be between 5"),
        (ExtendRequest(prompt="x", extend_where="middle"), r"^extend_where:"),
        (CoverRequest(prompt="x", audio_cover_strength=1.5), r"^audio_cover_strength:"),
    ],
)
def test_bad_rework_requests_are_refused_and_nothing_is_written(studio, tmp_path, request_, message):
    import dataclasses

    src = write_song(tmp_path / "song.wav", 12)
    with pytest.raises(ValueError, match=message):
        studio.generate(dataclasses.replace(request_, src_audio=str(src)), RunControl())
    assert not studio.store.root.exists() or not any(studio.store.root.iterdir())


def test_extension_past_ten_minutes_is_refused(studio, tmp_path):
    src = write_song(tmp_path / "long.wav", 400, rate=8_000, channels=1, kind="silence")
    control = RunControl()
    with pytest.raises(ValueError, match=r"^extend_seconds: 240 s added to a 400.0 s song makes 640.0 s"):
        studio.generate(ExtendRequest(prompt="x", src_audio=str(src), extend_seconds=240), control)
    assert control.steps_done == 0
    assert not studio.store.root.exists() or not any(studio.store.root.iterdir())


def test_missing_source_is_refused():
    with pytest.raises(ValueError, match=r"^src_audio: no audio given"):
        ExtendRequest(prompt="x").validate()


def test_undecodable_source_names_the_input(studio, tmp_path):
    bad = tmp_path / "song.mp3"
    bad.write_bytes(b"this is not audio at all" * 100)
    with pytest.raises(ValueError, match="Source song"):
        studio.generate(CoverRequest(prompt="x", src_audio=str(bad)), RunControl())


def test_base_only_tasks_are_refused_on_turbo_before_any_model_time(studio, tmp_path):
    src = write_song(tmp_path / "song.wav", 10)
    control = RunControl()
    request = EditRequest(prompt="x", src_audio=str(src), task_type="extract", track_name="vocals")
    with pytest.raises(ValueError, match=r"^task_type: 'extract' needs a base checkpoint, and tiny is turbo"):
        studio.generate(request, control)
    assert control.steps_done == 0
    assert not studio.store.root.exists() or not any(studio.store.root.iterdir())


@pytest.mark.parametrize(
    "extra",
    [
        {"task_type": "extract", "track_name": "drums"},
        {"task_type": "lego", "track_name": "guitar", "repainting_start": 2, "repainting_end": 6},
        {"task_type": "complete", "complete_track_classes": "bass, drums"},
    ],
)
def test_base_tasks_run_on_a_base_checkpoint(tiny_base_backend, tmp_path, extra):
    from outputs import OutputStore
    from studio import Studio

    studio = Studio(backend=tiny_base_backend, store=OutputStore(tmp_path / "out"))
    src = write_song(tmp_path / "song.wav", 10.5, rate=44_100)
    request = EditRequest.from_values(
        {"prompt": "x", "src_audio": str(src), "num_inference_steps": 4, "guidance_scale": 3.0, "seed": 1, **extra}
    )
    run = studio.generate(request, RunControl())
    assert read_take(run).shape == (2, round(10.5 * SR))
    saved = run.settings["request"]
    assert saved["task_type"] == extra["task_type"] and saved["guidance_scale"] == 3.0
    assert run.settings["model"]["variant"] == "base"


def test_base_task_arguments_reach_the_pipeline():
    extract = EditRequest(prompt="x", src_audio="a.wav", task_type="extract", track_name="vocals").validate()
    assert extract.pipeline_kwargs()["track_name"] == "vocals"
    assert "repainting_start" not in extract.pipeline_kwargs()
    complete = EditRequest.from_values(
        {"prompt": "x", "src_audio": "a.wav", "task_type": "complete", "complete_track_classes": ["bass", "drums"]}
    )
    assert complete.pipeline_kwargs()["complete_track_classes"] == ["bass", "drums"]
    with pytest.raises(ValueError, match=r"^track_name: choose one of"):
        EditRequest(prompt="x", src_audio="a.wav", task_type="lego").validate()
    with pytest.raises(ValueError, match=r"^complete_track_classes: 'kazoo'"):
        EditRequest.from_values({"prompt": "x", "src_audio": "a.wav", "complete_track_classes": "kazoo"})
    with pytest.raises(ValueError, match=r"^task_type:"):
        EditRequest(prompt="x", src_audio="a.wav", task_type="remix").validate()


@pytest.mark.parametrize("seconds", [8.83, 10.37, 12.0])
def test_a_source_between_latent_frames_reworks_and_keeps_its_length(studio, tmp_path, seconds):
    """An upload's length is anything: one that ends between two latent frames (8.83 s = 220.75
    frames) once crashed the DiT, the noise and the source's latents one frame apart."""
    src = write_song(tmp_path / "song.wav", seconds, kind="noise")
    loaded = load_audio(str(src), label="Source song")
    edit = EditRequest(prompt="x", src_audio=str(src), repainting_start=2, repainting_end=5, seed=2)
    run = studio.generate(edit, RunControl())
    saved = read_take(run)
    assert saved.shape == loaded.audio.shape  # the take keeps the source's own length, to the sample
    assert np.array_equal(saved[:, 5 * SR + FADE :], quantise(loaded.audio[:, 5 * SR + FADE :]))
    extended = studio.generate(ExtendRequest(prompt="x", src_audio=str(src), extend_seconds=5, seed=2), RunControl())
    assert read_take(extended).shape[-1] == loaded.audio.shape[-1] + 5 * SR
