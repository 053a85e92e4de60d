"""LoRAs as the studio runs them: a stack in the request, its record in settings.json, and the
no-LoRA output restored exactly. Uses its own tiny pipeline so no other test sees adapters."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from test_lora_stack import lora_weights, write_lora

from backend import Backend, DeviceInfo, RunControl
from checkpoints import resolve_model
from modes import GenerateRequest
from outputs import OutputStore
from studio import Studio


@pytest.fixture(scope="module")
def lora_studio(cache_dir, tmp_path_factory):
    backend = Backend(resolve_model("tiny", cache_dir=cache_dir), device=DeviceInfo("cpu", "float32"))
    root = tmp_path_factory.mktemp("lora-studio")
    return Studio(backend=backend, store=OutputStore(root / "outputs"), lora_store=root / "loras")


@pytest.fixture(scope="module")
def two_loras(lora_studio, tmp_path_factory):
    pipe = lora_studio.backend.load()
    folder = tmp_path_factory.mktemp("lora-files")
    first = write_lora(folder / "a" / "style.safetensors", lora_weights(pipe, seed=1))
    second = write_lora(folder / "b" / "style.safetensors", lora_weights(pipe, seed=2), fmt="peft")
    return lora_studio.add_lora(first, trigger_words=["shimmer"]), lora_studio.add_lora(second)


def take(studio: Studio, **changes) -> tuple[np.ndarray, dict]:
    values = dict(prompt="synth pop", audio_duration=10, seed=3, num_inference_steps=2, wav_bit_depth="32f")
    run = studio.generate(GenerateRequest(**{**values, **changes}), RunControl())
    return sf.read(run.takes[0].files["wav"], dtype="float32")[0], run.settings


def test_a_stack_changes_the_song_and_an_empty_one_restores_it_exactly(lora_studio, two_loras):
    first, second = two_loras
    assert first.name != second.name  # same file name, different content: both kept
    plain, settings = take(lora_studio)
    assert settings["loras"] == []
    stacked, settings = take(lora_studio, loras=f"{first.sha256[:12]}:0.8, {second.sha256[:12]}:1.5")
    assert [(item["sha256"], item["weight"]) for item in settings["loras"]] == [
        (first.sha256, 0.8),
        (second.sha256, 1.5),
    ]
    assert not np.array_equal(stacked, plain)
    zero, _ = take(lora_studio, loras=f"{first.sha256[:12]}:0")
    np.testing.assert_array_equal(zero, plain)
    after, _ = take(lora_studio)
    np.testing.assert_array_equal(after, plain)
    again, _ = take(lora_studio, loras=f"{first.sha256[:12]}:0.8, {second.sha256[:12]}:1.5")
    np.testing.assert_array_equal(again, stacked)


def test_trigger_words_join_the_prompt_on_request(lora_studio, two_loras):
    first, _ = two_loras
    _, settings = take(lora_studio, loras=first.sha256[:12], lora_triggers=True)
    assert settings["request"]["prompt"] == "synth pop" and settings["loras"][0]["trigger_words"] == ["shimmer"]


def test_a_lora_from_an_earlier_session_is_reloaded_from_the_store(lora_studio, two_loras, cache_dir):
    first, _ = two_loras
    stacked, _ = take(lora_studio, loras=f"{first.sha256[:16]}:1")
    # As after a restart: a new process state (new pipeline, new stack) over the same store.
    backend = Backend(resolve_model("tiny", cache_dir=cache_dir), device=DeviceInfo("cpu", "float32"))
    restarted = Studio(backend=backend, store=lora_studio.store, lora_store=lora_studio.lora_store)
    assert {e.sha256 for e in restarted.known_loras()} >= {first.sha256}
    again, settings = take(restarted, loras=f"{first.sha256[:16]}:1")
    assert settings["loras"][0]["sha256"] == first.sha256
    np.testing.assert_array_equal(again, stacked)


@pytest.mark.parametrize(
    ("loras", "message"),
    [
        ("abc:3", "loras: the weight of 'abc' must be between 0 and 2, got '3'"),
        ("abc:x", "loras: the weight in 'abc:x' is not a number"),
        ("abc, abc", "loras: 'abc' is listed twice"),
        (":1", "needs a LoRA name or sha256"),
    ],
)
def test_bad_stacks_are_refused_naming_the_field(loras, message):
    with pytest.raises(ValueError, match=message):
        GenerateRequest(prompt="x", loras=loras).validate()


def test_an_unknown_lora_is_refused_before_anything_runs(lora_studio):
    with pytest.raises(ValueError, match="no LoRA named or with sha256 'deadbeef00' is loaded or in the store"):
        take(lora_studio, loras="deadbeef00:1")
