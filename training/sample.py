"""A short sample rendered with the adapter as it is mid-training, so the user hears the progress.

The pipeline's own components are borrowed with the training copy of the DiT in place of the
studio's (``type(pipe)(**components)`` shares every module, copies none), the DiT in eval mode (no
dropout) for the render, and every RNG forked around it: a run with samples reaches bit for bit the
weights of a run without them, and Stop/Resume stay exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training.dataset import Clip
from training.prepare import training_caption

SAMPLE_SECONDS = 10.0  # short: a sample must not cost much of the run it reports on
SAMPLE_SEED = 0


def render_sample(
    pipe,
    transformer,
    clip: Clip,
    trigger_word: str,
    sampler: dict[str, Any],
    seconds: float = SAMPLE_SECONDS,
    seed: int = SAMPLE_SEED,
) -> np.ndarray:
    """Float32 stereo ``[2, samples]`` at the pipeline's rate: ``clip``'s caption (with the trigger
    word) and lyrics through ``transformer`` (the DiT being trained), with ``sampler``'s
    ``num_inference_steps``, ``guidance_scale`` and ``shift`` (the checkpoint's defaults)."""
    import torch

    borrowed = type(pipe)(**{**pipe.components, "transformer": transformer})
    borrowed.set_progress_bar_config(disable=True)
    devices = [torch.cuda.current_device()] if transformer.device.type == "cuda" else []
    was_training = transformer.training
    transformer.eval()
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            output = borrowed(
                prompt=training_caption(clip, trigger_word),
                lyrics=clip.lyrics,
                vocal_language=clip.language,
                audio_duration=seconds,
                num_inference_steps=int(sampler["num_inference_steps"]),
                guidance_scale=float(sampler["guidance_scale"]),
                shift=float(sampler["shift"]),
                generator=torch.Generator("cpu").manual_seed(seed),
                output_type="pt",
            )
    finally:
        transformer.train(was_training)
    return output.audios[0].float().cpu().numpy()
