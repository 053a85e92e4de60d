"""The full-size random-weight architecture (shapes only, on the meta device) and the FLOP estimate."""

from __future__ import annotations

import pytest

from tools.full_size import bf16_peak_tflops, build_full_size_pipeline, dit_flops_per_step, parameter_counts


@pytest.fixture(scope="module")
def meta_pipe():
    return build_full_size_pipeline(meta=True)


def test_the_full_size_components_have_the_published_sizes(meta_pipe):
    counts = parameter_counts(meta_pipe)
    assert 1.5e9 < counts["transformer"] < 1.7e9  # the "2B" DiT with its 0.6B condition encoder
    assert 0.55e9 < counts["condition_encoder"] < 0.65e9
    assert 0.55e9 < counts["text_encoder"] < 0.65e9  # Qwen3-Embedding-0.6B
    assert 0.1e9 < counts["vae"] < 0.25e9
    config = meta_pipe.transformer.config
    assert (config.hidden_size, config.num_hidden_layers, config.audio_acoustic_hidden_dim) == (2048, 24, 64)
    hop = 1
    for ratio in meta_pipe.vae.config.downsampling_ratios:
        hop *= ratio
    assert hop == 1920 and meta_pipe.vae.config.sampling_rate == 48_000  # 25 latent frames a second


def test_dit_flops_grow_with_the_song_and_double_with_guidance_and_batch(meta_pipe):
    one = dit_flops_per_step(meta_pipe, frames=1500)
    params = meta_pipe.transformer.config
    linear_floor = 2 * 1.5e9 * 1500 / params.patch_size
    assert linear_floor < one < 1.5 * linear_floor  # attention adds a little at 60 s
    assert dit_flops_per_step(meta_pipe, frames=1500, passes=2) == 2 * one
    assert dit_flops_per_step(meta_pipe, frames=1500, batch=4) == 4 * one
    assert dit_flops_per_step(meta_pipe, frames=4500) > 3 * one  # full-attention layers grow quadratically


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA GeForce RTX 3090", 71.0),
        ("cpu", None),
    ],
)
def test_peak_lookup(name, peak):
    assert bf16_peak_tflops(name) == peak
