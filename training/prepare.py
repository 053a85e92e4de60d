"""Preparation, once per clip: audio to VAE latents, caption and lyrics to the condition encoder's
embeddings, cached beside the dataset so a second run starts at once.

The conditioning is the pipeline's own text2music conditioning, made with its own methods
(diffusers ``AceStepPipeline``: ``encode_prompt`` with the text2music instruction,
``prepare_src_latents``, ``_build_chunk_mask``, the ``condition_encoder`` with the silence latent as
the timbre reference), so a LoRA learns under the condition it will be played with. The official
preprocessing (``acestep/training/dataset_builder_modules/preprocess_vae.py`` ``vae_encode``,
``preprocess_context.py`` ``build_context_latents``, ``preprocess_encoder.py`` ``run_encoder``)
builds the same target latents and context (silence + a chunk mask of ones); it feeds the timbre
encoder a zero reference where the pipeline (and so this) uses the silence latent.

Each clip's tensors are one safetensors file named by a hash of the audio file's bytes, its texts,
the model and ``PREP_VERSION``: a changed caption or a replaced file is prepared again, nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend import RunControl
from training.dataset import Clip, DatasetError, check_clip

CACHE_DIR_NAME = ".ace-train-cache"
PREP_VERSION = 1  # bump when what is cached changes
HASH_CHUNK_BYTES = 1024**2
TENSOR_NAMES = ("target_latents", "encoder_hidden_states", "context_latents")
# The prepared songs a run holds in memory together (a 4-minute song with long lyrics is about 25 MB at the
# full size): a thousand such songs would take more memory than a Space has, and the run would be killed.
MAX_PREPARED_BYTES = 8 * 1024**3


@dataclass(frozen=True)
class PreparedClip:
    """One clip as the DiT trains on it (float32, batch dimension dropped)."""

    name: str
    key: str
    tensors: dict[str, Any]  # target_latents [T, C], encoder_hidden_states [L, D], context_latents [T, 2C]


@dataclass(frozen=True)
class PrepareReport:
    clips: list[PreparedClip]
    encoded: int  # clips that went through the VAE this time (0: everything came from the cache)
    cache_dir: Path


def model_fingerprint(pipe) -> str:
    """What identifies the weights the embeddings were made with: the pipeline's folder and its
    components' configs (a random-weight test model is rebuilt with the same configs and seed)."""
    parts = [str(getattr(getattr(pipe, "config", None), "_name_or_path", ""))]
    parts.append(str(getattr(getattr(pipe, "transformer", None), "dtype", "")))  # bf16 on CUDA, float32 here
    for name in ("vae", "text_encoder", "condition_encoder", "transformer"):
        config = getattr(getattr(pipe, name, None), "config", None)
        to_dict = getattr(config, "to_dict", None)  # transformers' configs; diffusers' are dicts
        as_dict = to_dict() if to_dict is not None else dict(config or {})
        parts.append(json.dumps(as_dict, sort_keys=True, default=str))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def clip_key(clip: Clip, fingerprint: str, trigger_word: str = "") -> str:
    digest = hashlib.sha256()
    with clip.audio.open("rb") as source:
        while chunk := source.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    texts = [clip.caption, clip.lyrics, clip.language, str(clip.bpm), clip.keyscale, trigger_word]
    digest.update(json.dumps([texts, fingerprint, PREP_VERSION]).encode())
    return digest.hexdigest()


def training_caption(clip: Clip, trigger_word: str = "") -> str:
    """The caption the DiT sees: the trigger word first (the official builder's ``tag_position``
    "prepend" default), so the word calls the style up at generation time."""
    word = trigger_word.strip()
    return f"{word}, {clip.caption}" if word and word not in clip.caption else clip.caption


def prepare(
    pipe,
    clips: Sequence[Clip],
    control: RunControl | None = None,
    trigger_word: str = "",
    cache_dir: Path | None = None,
    max_bytes: int = MAX_PREPARED_BYTES,
) -> PrepareReport:
    """Every clip's training tensors, from the cache or encoded now. Every uncached clip is checked
    (format, length, silence) before the first is encoded; refusals name each clip; the prepared
    tensors are refused before loading when over ``max_bytes`` together. Raises ``DatasetError``,
    ``Cancelled``."""
    from safetensors.torch import load_file

    control = control or RunControl()
    if not clips:
        raise DatasetError("dataset: no songs to prepare")
    cache = cache_dir or clips[0].audio.parent / CACHE_DIR_NAME
    fingerprint = model_fingerprint(pipe)
    keys = [clip_key(clip, fingerprint, trigger_word) for clip in clips]
    # a song named twice (same audio and texts) is checked and encoded once
    missing = list(
        {
            key: (clip, key)
            for clip, key in zip(clips, keys, strict=True)
            if not (cache / f"{key}.safetensors").is_file()
        }.values()
    )
    problems = []
    for clip, _ in missing:
        control.check()
        try:
            check_clip(clip)  # decoded and let go: only the verdict is kept
        except DatasetError as error:
            problems.append(str(error))
    if problems:
        raise DatasetError("dataset: " + "; ".join(problems))
    for index, (clip, key) in enumerate(missing):
        control.check()
        control.report(index / len(missing), f"Preparing {clip.name} ({index + 1}/{len(missing)})")
        _save(cache / f"{key}.safetensors", encode_clip(pipe, clip, key, trigger_word))
    held = sum((cache / f"{key}.safetensors").stat().st_size for key in set(keys))
    if held > max_bytes:
        raise DatasetError(
            f"dataset: its {len(set(keys)):,} prepared songs take {held / 1e9:,.1f} GB, over the "
            f"{max_bytes / 1e9:,.1f} GB a run holds in memory; train on fewer or shorter songs"
        )
    loaded: dict[str, dict[str, Any]] = {}  # a song named twice is held once (the trainer only reads it)
    prepared = []
    for clip, key in zip(clips, keys, strict=True):
        if key not in loaded:
            tensors = load_file(str(cache / f"{key}.safetensors"))
            loaded[key] = {name: tensors[name] for name in TENSOR_NAMES}
        prepared.append(PreparedClip(clip.name, key, loaded[key]))
    control.report(1.0, f"Prepared {len(clips)} songs ({len(missing)} encoded, {len(clips) - len(missing)} cached)")
    return PrepareReport(prepared, len(missing), cache)


def encode_clip(pipe, clip: Clip, key: str, trigger_word: str = "") -> dict[str, Any]:
    """One clip's target latents, condition embeddings and context, as the pipeline makes them for
    text2music. The VAE samples its posterior from the global RNG (as in the pipeline and the
    official ``vae_encode``), seeded here from the clip's key so a cache entry is reproducible."""
    import torch

    from flow_edit import silent_timbre_condition

    audio = check_clip(clip).audio
    device = pipe.transformer.device
    dtype = pipe.transformer.dtype
    duration = audio.shape[-1] / pipe.sample_rate
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(key[:15], 16))
        target, latent_length = pipe.prepare_src_latents(
            device=device, dtype=dtype, src_audio=torch.from_numpy(audio), task_type="text2music"
        )
        text, text_mask, lyric, lyric_mask = pipe.encode_prompt(
            prompt=training_caption(clip, trigger_word),
            lyrics=clip.lyrics,
            device=device,
            vocal_language=clip.language,
            audio_duration=duration,
            instruction=pipe._get_task_instruction(task_type="text2music"),
            bpm=clip.bpm,
            keyscale=clip.keyscale or None,
        )
        encoder_hidden_states = silent_timbre_condition(pipe, text, text_mask, lyric, lyric_mask)
        source, _ = pipe.prepare_src_latents(device=device, dtype=dtype, latent_length=latent_length)
        mask = pipe._build_chunk_mask(
            task_type="text2music",
            latent_length=latent_length,
            batch_size=1,
            device=device,
            dtype=dtype,
            acoustic_dim=pipe.transformer.config.audio_acoustic_hidden_dim,
        )
    tensors = {
        "target_latents": target[0],
        "encoder_hidden_states": encoder_hidden_states[0],
        "context_latents": torch.cat([source, mask], dim=-1)[0],
    }
    return {name: tensor.detach().float().cpu().contiguous() for name, tensor in tensors.items()}


def _save(path: Path, tensors: dict[str, Any]) -> None:
    """Written under a temporary name and renamed into place: a stopped run leaves no half file."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=".prep-", suffix=".safetensors", dir=path.parent)
    os.close(handle)
    try:
        save_file(tensors, staging, metadata={"prep_version": str(PREP_VERSION)})
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)
