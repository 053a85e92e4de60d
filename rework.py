"""Cover, Extend and Edit: the source audio prepared for the pipeline, and the result spliced back.

The pipeline re-renders the whole clip through the VAE and peak-normalises it, so for
Extend and Edit the studio keeps only the new span of each take and splices it into
the decoded source with short crossfades: every source sample outside the fades is
bit-identical to the input.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audio_io import SAMPLE_RATE, LoadedAudio, crossfade_splice, fit_length
from modes import CoverRequest, EditRequest, ExtendRequest, SongRequest
from repaint_steps import RepaintInjection, repaint_config
from validation import MIN_DURATION_S

# The timbre reference: three 10 s pieces (30 s) from the front, middle and back thirds, at offsets
# drawn from the seed (official handler.py ``process_reference_audio``; diffusers takes fixed pieces).
TIMBRE_PIECE_S = 10
TIMBRE_PIECES = 3
SILENCE_LEVEL = 1e-6  # official handler.py ``is_silence``: every sample below this
LATENT_HOP = SAMPLE_RATE // 25  # samples per latent frame (the VAE makes 25 a second): 1920
SPLICE_FADE_S = 0.1  # equal-power crossfade at each seam: long enough to hide a click
MAX_LEVEL_MATCH_DB = 12.0  # never boost or cut the new span by more than this


@dataclass
class Prepared:
    """What one mode adds to the pipeline call, and how each take is finished."""

    kwargs: dict[str, Any]  # extra pipeline arguments (audio as numpy [2, samples])
    finish: Callable[[np.ndarray], np.ndarray] = field(default=lambda take: take)
    # Run after each denoising step on the latents (``backend.StepHook``), e.g. repaint re-injection.
    step_hooks: list[Callable[[int, float, Any], Any]] = field(default_factory=list)


def prepare(request: SongRequest, source: LoadedAudio | None, reference: LoadedAudio | None) -> Prepared:
    """Build the pipeline inputs for a rework request; raises ``ValueError`` on a length problem."""
    if isinstance(request, CoverRequest):
        return _prepare_cover(request, _need(source), reference)
    if isinstance(request, ExtendRequest):
        return _prepare_extend(request, _need(source))
    if isinstance(request, EditRequest):
        return _prepare_edit(request, _need(source))
    raise TypeError(f"{type(request).__name__} takes no source audio")


def source_kwargs(audio: np.ndarray) -> dict[str, Any]:
    """``src_audio`` zero-padded to a whole number of latent frames, and its duration. diffusers sizes
    the noise as ``ceil(duration * 25)`` frames and the source's latents by what the VAE makes of the
    samples it gets; between two frames they can disagree by one, which crashes the DiT (an 8.83 s
    upload did). Each mode's ``finish`` trims the take back to its own length."""
    padded = fit_length(audio, audio.shape[-1] + (-audio.shape[-1] % LATENT_HOP))
    return {"src_audio": padded, "audio_duration": padded.shape[-1] / SAMPLE_RATE}


def _need(source: LoadedAudio | None) -> LoadedAudio:
    if source is None:
        raise ValueError("src_audio: no audio given")
    return source


def _prepare_cover(request: CoverRequest, source: LoadedAudio, reference: LoadedAudio | None) -> Prepared:
    audio = source.audio
    if request.audio_duration is not None:
        audio = fit_length(audio, round(request.audio_duration * SAMPLE_RATE))
    duration_s = audio.shape[-1] / SAMPLE_RATE
    if duration_s < MIN_DURATION_S:
        raise ValueError(
            f"src_audio: the source is {duration_s:.1f} s long and a cover is at least {MIN_DURATION_S} s; "
            f"set audio_duration to {MIN_DURATION_S} or more to pad it with silence"
        )
    kwargs = source_kwargs(audio)
    if reference is not None:
        kwargs["reference_audio"] = timbre_reference(reference.audio, request.seed)
    samples = audio.shape[-1]
    return Prepared(kwargs=kwargs, finish=lambda take: fit_length(take, samples))


def _prepare_extend(request: ExtendRequest, source: LoadedAudio) -> Prepared:
    request.check_source(source.duration_s)
    seed = source.audio
    added = round(request.extend_seconds * SAMPLE_RATE)
    silence = np.zeros((seed.shape[0], added), dtype=np.float32)
    if request.extend_where == "after":
        padded = np.concatenate([seed, silence], axis=1)
        start, end = seed.shape[-1], padded.shape[-1]
    else:
        padded = np.concatenate([silence, seed], axis=1)
        start, end = 0, added
    return repaint(padded, start, end, _injection(request))


def _prepare_edit(request: EditRequest, source: LoadedAudio) -> Prepared:
    request.check_source(source.duration_s)
    audio = source.audio
    samples = audio.shape[-1]
    if request.task_type != "repaint":
        # Extract, lego and complete make a different track, not a patch of this one:
        # the take is the model's output, at the source's length. Lego works on a segment,
        # and official re-imposes the source outside it as for repaint (conditioning_masks.py).
        kwargs = source_kwargs(audio)
        hooks = _injection(request) if request.task_type == "lego" else []
        return Prepared(kwargs=kwargs, finish=lambda take: fit_length(take, samples), step_hooks=hooks)
    start = round(request.repainting_start * SAMPLE_RATE)
    end = min(round(request.repainting_end * SAMPLE_RATE), audio.shape[-1])
    return repaint(audio, start, end, _injection(request))


def _injection(request: EditRequest | ExtendRequest) -> list[Callable[[int, float, Any], Any]]:
    """The official repaint step hook for the request's mode; none for "aggressive" (which is what
    runs saved before the modes existed did), so those reproduce bit for bit."""
    config = repaint_config(request.repaint_mode, request.repaint_strength)
    return [RepaintInjection(config)] if config.changes_sampling else []


def repaint(
    original: np.ndarray, start: int, end: int, step_hooks: list[Callable[[int, float, Any], Any]] | None = None
) -> Prepared:
    """Repaint ``[start, end)`` of ``original`` and splice each take back into it; ``step_hooks``
    (official repaint's re-injection) run in the sampler."""
    samples = original.shape[-1]
    fade = round(SPLICE_FADE_S * SAMPLE_RATE)
    kwargs = {
        **source_kwargs(original),
        "repainting_start": start / SAMPLE_RATE,
        "repainting_end": end / SAMPLE_RATE,
    }

    def finish(take: np.ndarray) -> np.ndarray:
        take = fit_length(take, samples)
        take = take * _level_match_gain(original, take, start, end)
        return crossfade_splice(original, take.astype(np.float32), start, end, fade)

    return Prepared(kwargs=kwargs, finish=finish, step_hooks=list(step_hooks or []))


def _level_match_gain(original: np.ndarray, take: np.ndarray, start: int, end: int) -> float:
    """Gain that brings the take to the source's level, measured where both should agree.

    The pipeline peak-normalises every output to -1 dBFS, so without this a quiet
    source would get a new span far louder than the music around it.
    """
    keep = np.ones(original.shape[-1], dtype=bool)
    keep[start:end] = False
    if not keep.any():
        return 1.0
    source_rms = float(np.sqrt(np.mean(np.square(original[:, keep], dtype=np.float64))))
    take_rms = float(np.sqrt(np.mean(np.square(take[:, keep], dtype=np.float64))))
    if source_rms < 1e-6 or take_rms < 1e-6:
        return 1.0
    limit = 10 ** (MAX_LEVEL_MATCH_DB / 20)
    return float(np.clip(source_rms / take_rms, 1 / limit, limit))


def timbre_reference(audio: np.ndarray, seed: int) -> np.ndarray:
    """The 30 s the timbre encoder hears from a reference ``[2, samples]``, as the official code picks it:
    repeated up to 30 s, then one 10 s piece from a random offset in each third, the offsets drawn from
    ``seed`` so a run reproduces. The pipeline's own fixed front/middle/back cut of a 30 s clip is then
    exactly these three pieces. Refuses a silent reference (official would drop it without a word)."""
    if not np.any(np.abs(audio) >= SILENCE_LEVEL):
        raise ValueError(
            "reference_audio: the timbre reference is silent; upload a clip with the voice or instruments to borrow"
        )
    piece = TIMBRE_PIECE_S * SAMPLE_RATE
    if audio.shape[-1] < piece * TIMBRE_PIECES:
        audio = np.tile(audio, (1, -(-piece * TIMBRE_PIECES // audio.shape[-1])))
    total = audio.shape[-1]
    third = total // TIMBRE_PIECES
    draw = random.Random(seed)
    starts = [i * third + draw.randint(0, max(0, third - piece)) for i in range(TIMBRE_PIECES - 1)]
    starts.append((TIMBRE_PIECES - 1) * third + draw.randint(0, max(0, total - (TIMBRE_PIECES - 1) * third - piece)))
    return np.concatenate([audio[:, start : start + piece] for start in starts], axis=1).astype(np.float32)
