"""Stems with Demucs' tiny bundled test model, on takes the tiny pipeline made."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import soundfile as sf

from backend import Cancelled, RunControl
from modes import GenerateRequest
from stems import StemSplitter

TEST_MODEL = "demucs_unittest"


def test_separation_returns_four_stems_of_the_input_shape():
    audio = (np.random.default_rng(0).standard_normal((2, 5 * 48_000)) * 0.1).astype(np.float32)
    stems = StemSplitter(device="cpu").separate(audio, TEST_MODEL)
    assert sorted(stems) == ["bass", "drums", "other", "vocals"]
    for stem in stems.values():
        assert stem.shape == audio.shape and stem.dtype == np.float32


def test_stems_are_saved_into_the_run(studio):
    run = studio.generate(GenerateRequest(prompt="x", audio_duration=10, seed=1, batch_size=2), RunControl())
    progress = []
    files = studio.stems(run.run_id, 2, TEST_MODEL, RunControl(lambda f, m: progress.append(m)))
    names = sorted(path.name for path in files)
    assert names == ["bass.flac", "drums.flac", "other.flac", f"stems-take2-{TEST_MODEL}.zip", "vocals.flac"]
    for path in files:
        assert path.parent == run.folder / f"stems-take2-{TEST_MODEL}"
    info = sf.info(files[0])
    assert (info.samplerate, info.channels, info.frames) == (48_000, 2, 10 * 48_000)
    with zipfile.ZipFile(next(p for p in files if p.suffix == ".zip")) as archive:
        assert len(archive.namelist()) == 4
    assert "Separating stems…" in progress


@pytest.mark.parametrize(
    ("run_id", "take", "model", "message"),
    [
        ("../../etc", 1, TEST_MODEL, r"^run_id: '\.\./\.\./etc' is not the name of a run"),
        ("no-such-run", 1, TEST_MODEL, r"^run_id: no run called"),
        (None, 3, TEST_MODEL, r"^take: run .* has 1 take\(s\), got 3"),
        (None, 1, "spleeter", r"^stem_model: must be one of"),
    ],
)
def test_bad_stem_requests_are_refused(studio, run_id, take, model, message):
    run = studio.generate(GenerateRequest(prompt="x", audio_duration=10, seed=2), RunControl())
    with pytest.raises(ValueError, match=message):
        studio.stems(run_id or run.run_id, take, model, RunControl())
    assert not any(path.name.startswith("stems") for path in run.folder.iterdir())


def test_cancel_during_separation_leaves_no_stems(studio):
    run = studio.generate(GenerateRequest(prompt="x", audio_duration=10, seed=3), RunControl())
    control = RunControl()

    def on_progress(fraction: float, message: str) -> None:
        if message == "Separating stems…":
            control.cancel()

    control._on_progress = on_progress
    with pytest.raises(Cancelled):
        studio.stems(run.run_id, 1, TEST_MODEL, control)
    assert sorted(p.name for p in run.folder.iterdir() if not p.name.startswith("take")) == ["settings.json"]
