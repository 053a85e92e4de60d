from __future__ import annotations

import torch
from diffusers import AceStepPipeline, AutoencoderOobleck
from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel

from tools.tiny_model import MARKER_FILE, ensure_tiny_model, tiny_model_dir


def test_tiny_model_is_built_saved_and_loaded_through_from_pretrained(tmp_path):
    folder = ensure_tiny_model(tmp_path)
    assert folder == tiny_model_dir(tmp_path)
    assert (folder / "model_index.json").is_file()
    assert (folder / MARKER_FILE).is_file()
    assert not list(tmp_path.glob(".tiny-build-*")), "the staging folder must be gone"

    pipe = AceStepPipeline.from_pretrained(folder)
    assert isinstance(pipe.transformer, AceStepTransformer1DModel)
    assert isinstance(pipe.vae, AutoencoderOobleck)
    assert pipe.audio_tokenizer is not None and pipe.audio_token_detokenizer is not None
    assert pipe.sample_rate == 48_000 and pipe.latents_per_second == 25.0
    assert pipe.is_turbo
    # The silence latent is real encoded silence, not zeros.
    assert pipe.condition_encoder.silence_latent.abs().sum() > 0

    audio = pipe(
        prompt="test",
        lyrics="[verse]\nla la",
        audio_duration=10,
        num_inference_steps=2,
        guidance_scale=1.0,
        generator=torch.Generator().manual_seed(0),
    ).audios
    assert audio.shape == (1, 2, 10 * 48_000)
    assert torch.isfinite(audio).all()


def test_second_call_reuses_the_saved_model(tmp_path):
    folder = ensure_tiny_model(tmp_path)
    stamp = (folder / MARKER_FILE).stat().st_mtime_ns
    assert ensure_tiny_model(tmp_path) == folder
    assert (folder / MARKER_FILE).stat().st_mtime_ns == stamp


def test_build_is_deterministic(tmp_path):
    first = AceStepPipeline.from_pretrained(ensure_tiny_model(tmp_path / "a"))
    second = AceStepPipeline.from_pretrained(ensure_tiny_model(tmp_path / "b"))
    first_weights, second_weights = first.transformer.state_dict(), second.transformer.state_dict()
    assert first_weights.keys() == second_weights.keys()
    for name, weight in first_weights.items():
        assert torch.equal(weight, second_weights[name]), name
