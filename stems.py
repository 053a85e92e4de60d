"""Stems: split a finished take into instrument tracks with Demucs.

Separators load lazily, once per model (``backend.Lazy``: one model load at a time in the
process), on the GPU when there is one. Demucs works at 44.1 kHz; the studio's audio is
48 kHz, so stems are resampled back before they are written. Nothing here knows about Gradio.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from math import gcd

import numpy as np

from audio_io import SAMPLE_RATE
from backend import Lazy
from validation import echo

# name -> what the UI says about it. demucs_unittest is a tiny bundled model for tests.
STEM_MODELS: dict[str, str] = {
    "htdemucs": "4 stems: drums, bass, other, vocals",
    "htdemucs_6s": "6 stems: adds guitar and piano",
    "demucs_unittest": "test model (tiny, bundled; not for real use)",
}
DEFAULT_STEM_MODEL = "htdemucs"


class StemModelUnavailableError(RuntimeError):
    """The Demucs weights could not be loaded; the message says why and what to do."""


class StemSplitter:
    """One Demucs separator per model name, built on first use and kept."""

    def __init__(self, device: str | None = None) -> None:
        self._device = device
        self._separators = {model: Lazy(functools.partial(self._load, model)) for model in STEM_MODELS}

    def _separator(self, model: str):
        if model not in STEM_MODELS:
            raise ValueError(f"stem_model: must be one of {', '.join(STEM_MODELS)}, got {echo(model)}")
        return self._separators[model].get()

    def _load(self, model: str):
        import demucs.api
        import torch

        device = self._device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            return demucs.api.Separator(model=model, device=device, progress=False)
        except OSError as error:  # urllib's URLError is an OSError
            raise StemModelUnavailableError(
                f"Could not load the stem model {echo(model)}: its weights are downloaded on first use "
                f"(Hugging Face / Meta's file server) and that failed ({error}). Run once with a network, "
                "or copy the Torch hub cache (~/.cache/torch/hub/checkpoints) from a machine that has it."
            ) from error

    def separate(
        self,
        audio: np.ndarray,
        model: str = DEFAULT_STEM_MODEL,
        progress: Callable[[float], None] | None = None,
    ) -> dict[str, np.ndarray]:
        """Split ``[2, samples]`` 48 kHz audio into ``{stem: [2, samples]}`` at 48 kHz."""
        import torch

        separator = self._separator(model)
        model_rate = separator.samplerate
        if progress is not None:

            def report(info: dict) -> None:
                length = max(int(info.get("audio_length", 0)), 1)
                progress(min(float(info.get("segment_offset", 0)) / length, 1.0))

            separator.update_parameter(callback=report)
        try:
            tensor = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
            _, stems = separator.separate_tensor(tensor, SAMPLE_RATE)
        finally:
            separator.update_parameter(callback=None)
        samples = audio.shape[-1]
        return {name: _to_studio_rate(stem.cpu().numpy(), model_rate, samples) for name, stem in stems.items()}


def _to_studio_rate(stem: np.ndarray, rate: int, samples: int) -> np.ndarray:
    from scipy.signal import resample_poly

    common = gcd(rate, SAMPLE_RATE)
    out = resample_poly(stem, SAMPLE_RATE // common, rate // common, axis=1).astype(np.float32)
    if out.shape[-1] >= samples:
        return out[:, :samples]
    return np.pad(out, ((0, 0), (0, samples - out.shape[-1])))
