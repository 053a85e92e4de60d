"""Full-size ACE-Step 1.5 pipelines with random weights, for benchmarks with nothing downloaded.

The architecture is the published 2B one (turbo, SFT and base share it): the DiT, condition
encoder, audio tokenizer and detokenizer are diffusers' classes at their defaults, which
diffusers wrote for the 2B checkpoints (hidden 2048, 24 DiT layers, 16 heads, 8 KV heads);
the text encoder is Qwen3-Embedding-0.6B's shape; the VAE is the ACE-Step 1.5 Oobleck VAE
(48 kHz, 1920-sample hop: ratios 2·4·4·6·10, channels 128 × 1-2-4-8-16, 64 latent channels;
the same config in several independent ports). Only the tokenizer is a stand-in (a small
byte-level BPE; the text encoder keeps Qwen's 151,669-entry embedding table), so prompts
tokenize to a similar, not identical, number of tokens.

Random weights make noise, not music, but cost exactly the FLOPs and memory of the real
model, which is what speed and overhead figures need. The XL (4B) DiT is not built here:
its full config is not published outside the checkpoint.
"""

from __future__ import annotations

import contextlib
from typing import Any

# Qwen3-Embedding-0.6B (the ACE-Step 1.5 text encoder).
TEXT_ENCODER = dict(
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    vocab_size=151_669,
    max_position_embeddings=32_768,
    rope_theta=1_000_000.0,
)
VAE = dict(
    encoder_hidden_size=128,
    downsampling_ratios=[2, 4, 4, 6, 10],
    channel_multiples=[1, 2, 4, 8, 16],
    decoder_channels=128,
    decoder_input_channels=64,
    audio_channels=2,
    sampling_rate=48_000,
)
SILENCE_FRAMES = 15_000  # the condition encoder's silence latent: 600 s at 25 Hz
# Peak dense bf16 tensor throughput (TFLOP/s), from the vendors' data sheets, for MFU.
BF16_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10G": 125.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
}


def build_full_size_pipeline(turbo: bool = True, dtype: Any = None, meta: bool = False):
    """The 2B pipeline with random weights, built directly in ``dtype`` (default bfloat16).

    ``meta=True`` builds it on PyTorch's meta device: shapes and parameter counts, no memory.
    """
    import torch
    from diffusers import AceStepPipeline, AutoencoderOobleck, FlowMatchEulerDiscreteScheduler
    from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel
    from diffusers.pipelines.ace_step.modeling_ace_step import (
        AceStepAudioTokenDetokenizer,
        AceStepAudioTokenizer,
        AceStepConditionEncoder,
    )
    from transformers import Qwen3Config, Qwen3Model

    from tools.tiny_model import _build_tokenizer

    dtype = dtype or torch.bfloat16
    previous = torch.get_default_dtype()
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta") if meta else contextlib.nullcontext():
            transformer = AceStepTransformer1DModel(is_turbo=turbo)
            condition_encoder = AceStepConditionEncoder()
            text_encoder = Qwen3Model(Qwen3Config(**TEXT_ENCODER))
            audio_tokenizer = AceStepAudioTokenizer()
            audio_token_detokenizer = AceStepAudioTokenDetokenizer()
            vae = AutoencoderOobleck(**VAE)
    finally:
        torch.set_default_dtype(previous)
    if not meta:
        with torch.no_grad():
            # Encoded silence, as in the real checkpoints (and the tiny model).
            zeros = torch.zeros(1, 2, VAE["sampling_rate"], dtype=dtype)
            silence = vae.encode(zeros).latent_dist.mode().transpose(1, 2)
            repeats = -(-SILENCE_FRAMES // silence.shape[1])
            condition_encoder.silence_latent.copy_(silence.repeat(1, repeats, 1)[:, :SILENCE_FRAMES])
    return AceStepPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=_build_tokenizer(),
        transformer=transformer,
        condition_encoder=condition_encoder,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        audio_tokenizer=audio_tokenizer,
        audio_token_detokenizer=audio_token_detokenizer,
    )


def parameter_counts(pipe) -> dict[str, int]:
    """Parameters per component (what the memory and FLOP figures rest on)."""
    names = ("transformer", "condition_encoder", "text_encoder", "vae", "audio_tokenizer", "audio_token_detokenizer")
    return {name: sum(p.numel() for p in getattr(pipe, name).parameters()) for name in names}


def dit_flops_per_step(pipe, frames: int, batch: int = 1, passes: int = 1, text_tokens: int = 256) -> float:
    """Estimated FLOPs of one denoising step of the DiT: 2 per weight per token for every linear
    layer, plus attention's two T x T (or T x window) products, over ``passes`` (2 with guidance).

    ``frames`` are 25 Hz latent frames; the DiT sees ``frames / patch_size`` tokens.
    """
    import torch

    transformer = pipe.transformer
    config = transformer.config
    tokens = frames // config.patch_size
    linear = sum(m.weight.numel() for m in transformer.modules() if isinstance(m, torch.nn.Linear))
    width = config.num_attention_heads * config.head_dim
    window = config.sliding_window or tokens
    layer_types = list(getattr(transformer, "layer_types", None) or config.layer_types or [])
    attention = 0.0
    for kind in layer_types[: config.num_hidden_layers]:
        keys = min(window, tokens) if kind == "sliding_attention" else tokens
        attention += 4 * tokens * keys * width  # Q·K^T and A·V, 2 FLOPs per multiply-add
        attention += 4 * tokens * text_tokens * width  # cross-attention to the conditions
    return float(batch * passes * (2 * linear * tokens + attention))


def bf16_peak_tflops(device_name: str) -> float | None:
    """The device's dense bf16 peak from ``BF16_PEAK_TFLOPS``, matched by name; None if unknown."""
    for key in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):
        if all(part in device_name for part in key.split()):
            return BF16_PEAK_TFLOPS[key]
    return None
