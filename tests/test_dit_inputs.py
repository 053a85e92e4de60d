"""What reaches the DiT besides the text: the timbre reference on Generate, and the refusals a
checkpoint's missing parts call for, made before any model time."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from backend import Backend, DeviceInfo, RunControl
from checkpoints import resolve_model
from modes import CoverRequest, GenerateRequest
from outputs import OutputStore
from rework import TIMBRE_PIECE_S, timbre_reference
from studio import Studio
from tests.test_rework import read_take, write_song

SR = 48_000


class NoModelTime:
    """A planner or loader that fails the test if anything reaches it."""

    def __getattr__(self, name):
        raise AssertionError(f"model time spent: {name}")

    def __call__(self, *args, **kwargs):
        raise AssertionError("the model was loaded")


def test_timbre_pieces_come_from_each_third_at_offsets_drawn_from_the_seed():
    ramp = np.tile(np.arange(45 * SR, dtype=np.float32)[None] / (45 * SR) + 0.01, (2, 1))
    picked = timbre_reference(ramp, seed=7)
    piece = TIMBRE_PIECE_S * SR
    assert picked.shape == (2, 3 * piece)
    starts = [round((picked[0, i * piece] - 0.01) * 45 * SR) for i in range(3)]
    third = 15 * SR
    assert [start // third for start in starts] == [0, 1, 2]
    assert all(start % third <= third - piece for start in starts)
    assert np.array_equal(timbre_reference(ramp, seed=7), picked)
    assert not np.array_equal(timbre_reference(ramp, seed=8), picked)


def test_a_short_reference_is_repeated_to_30_s():
    short = np.full((2, 4 * SR), 0.1, dtype=np.float32)
    assert timbre_reference(short, seed=1).shape == (2, 3 * TIMBRE_PIECE_S * SR)


def test_a_silent_reference_is_refused():
    with pytest.raises(ValueError, match="reference_audio: the timbre reference is silent"):
        timbre_reference(np.zeros((2, SR), dtype=np.float32), seed=1)


def _count_dit_calls(pipe) -> tuple[list[int], object]:
    calls: list[int] = []
    handle = pipe.transformer.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls, handle


def test_generate_hears_a_timbre_reference_and_keeps_a_copy(studio, tmp_path):
    ref = write_song(tmp_path / "ref.wav", 12.0, kind="noise")
    base = dict(prompt="jazz", audio_duration=10, num_inference_steps=2, seed=4)
    plain = studio.generate(GenerateRequest(**base), RunControl())
    run = studio.generate(GenerateRequest(**base, reference_audio=str(ref)), RunControl())
    assert run.settings["inputs"] == {"reference_audio": "reference.wav"}
    again = studio.generate(GenerateRequest(**base, reference_audio=str(ref)), RunControl())
    assert not np.array_equal(read_take(plain), read_take(run))  # the timbre reached the DiT
    assert np.array_equal(read_take(run), read_take(again))  # the same pieces, from the seed


def test_a_silent_reference_on_generate_is_refused_before_the_dit(studio, tmp_path):
    silent = write_song(tmp_path / "silent.wav", 5.0, kind="silence")
    calls, handle = _count_dit_calls(studio.backend.load())
    try:
        with pytest.raises(ValueError, match="silent"):
            studio.generate(GenerateRequest(prompt="x", audio_duration=10, reference_audio=str(silent)), RunControl())
    finally:
        handle.remove()
    assert calls == []


@pytest.fixture()
def codecless_studio(tiny_backend, tmp_path):
    """A checkpoint without the audio tokenizer/detokenizer, whose loading fails the test."""
    folder = tmp_path / "no-codec"
    shutil.copytree(tiny_backend.spec.source, folder)
    index = json.loads((folder / "model_index.json").read_text())
    for name in ("audio_tokenizer", "audio_token_detokenizer"):
        index[name] = [None, None]
        shutil.rmtree(folder / name, ignore_errors=True)
    (folder / "model_index.json").write_text(json.dumps(index))
    backend = Backend(resolve_model(str(folder)), device=DeviceInfo("cpu", "float32"), loader=NoModelTime())
    return Studio(backend=backend, store=OutputStore(tmp_path / "outputs"), planner=NoModelTime())


def test_think_and_cover_are_refused_without_the_audio_codec(codecless_studio, tmp_path):
    src = write_song(tmp_path / "src.wav", 10.0)
    for request, field in (
        (GenerateRequest(prompt="x", think=True), "think"),
        (CoverRequest(prompt="x", src_audio=str(src)), "src_audio"),
    ):
        with pytest.raises(ValueError, match=f"{field}: .*audio tokenizer and detokenizer"):
            codecless_studio.generate(request, RunControl())


def test_base_checkpoints_start_with_think_off(tiny_backend, tiny_base_backend, tmp_path):
    store = OutputStore(tmp_path / "outputs")
    assert Studio(backend=tiny_backend, store=store, planner=NoModelTime()).defaults().think is True
    assert Studio(backend=tiny_base_backend, store=store, planner=NoModelTime()).defaults().think is False
