"""GPU time on Hugging Face ZeroGPU: how long to ask for, and the decorated entry points.

On ZeroGPU every GPU call is scheduled for a stated duration: ask too little and the task
is aborted mid-song, ask too much and the visitor waits longer in the queue and spends
more of a small daily quota. ``estimate_gpu_seconds`` reads the request by name and is
clamped to what ZeroGPU grants. ``spaces.GPU`` must wrap its function when the module is
imported (ZeroGPU registers tasks at start-up), so the two entry points below are
decorated here, at import time; off ZeroGPU the decorator is an identity and the studio
calls the engine directly so that Cancel reaches the run.

On ZeroGPU the decorated function runs in a forked worker: its arguments and result are
pickled across, so they are plain data (a frozen request, a ``Run``), and the studio is
found through the module-level ``attach``-ed instance that the fork inherits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from modes import ExtendRequest, SongRequest

MIN_GPU_S = 20  # the scheduler's granularity in practice; shorter asks gain nothing
MAX_GPU_S = 300  # ZeroGPU refuses longer single tasks (FACTS.md: long requests capped ~300 s)
RETRY_FACTOR = 2  # an aborted task is tried once more with twice the time

# Calibration, in seconds on a ZeroGPU H200 slice. No GPU machine was lent to the session
# that wrote this, so the figures come from ACE-Step 1.5's published speed (turbo, 8 steps:
# under 2 s for a full 4-minute song on an A100, i.e. ~0.06 s per step per minute of audio
# for the 2B DiT) doubled for the XL DiT and again for safety; VAE decode and the planner
# are sized the same way. ``bench.py --random-weights full-size`` on a GPU replaces them.
WARM_UP_S = 10.0  # a fresh worker moving the pipeline onto the GPU
DIT_STEP_S_PER_MIN = 0.25  # one DiT step over one minute of audio, batch 1, no guidance
VAE_S_PER_MIN = 1.0  # decode (and encode, for a source song) of one minute of stereo audio
PLANNER_S_PER_MIN = 12.0  # the 1.7B planner writing 300 audio codes (one minute), with LM guidance
PLANNER_THINK_S = 3.0  # its metadata and caption before the codes
LORA_LOAD_S = 2.0  # each adapter, the first time a worker sees it
LORA_STEP_FACTOR = 0.05  # extra DiT time per active adapter


def song_minutes(request: SongRequest) -> float:
    """The length the model will render, in minutes (a source song's length is read from its header)."""
    seconds = request.audio_duration or 0.0
    if isinstance(request, ExtendRequest) or not seconds:
        source = getattr(request, "src_audio", "")
        if source:
            from audio_io import probe

            try:
                header = probe(source)
                seconds = header.frames / header.samplerate
            except ValueError:
                seconds = 0.0  # intake will refuse it with its own message
        if isinstance(request, ExtendRequest):
            seconds += request.extend_seconds
    return max(seconds, 10.0) / 60.0


def estimate_gpu_seconds(request: SongRequest, think: bool = False, lora_count: int = 0, **_: Any) -> int:
    """GPU seconds to ask ZeroGPU for this request, within ``[MIN_GPU_S, MAX_GPU_S]``.

    Takes the same arguments as the decorated entry points (``spaces.GPU`` calls it with
    them), read by name.
    """
    minutes = song_minutes(request)
    batch = request.batch_size
    guidance_passes = 2 if request.guidance_scale > 1.0 else 1
    dit = request.num_inference_steps * DIT_STEP_S_PER_MIN * minutes * batch * guidance_passes
    dit *= 1.0 + LORA_STEP_FACTOR * lora_count
    vae = VAE_S_PER_MIN * minutes * batch * (2 if getattr(request, "src_audio", "") else 1)
    planner = (PLANNER_THINK_S + PLANNER_S_PER_MIN * minutes) * batch if think else 0.0
    total = WARM_UP_S + dit + vae + planner + LORA_LOAD_S * lora_count
    return int(min(max(math.ceil(total), MIN_GPU_S), MAX_GPU_S))


def _retry_seconds(request: SongRequest, think: bool = False, lora_count: int = 0, **_: Any) -> int:
    return min(RETRY_FACTOR * estimate_gpu_seconds(request, think, lora_count), MAX_GPU_S)


def _gpu(duration: Callable[..., int]) -> Callable[[Callable], Callable]:
    try:
        import spaces
    except ImportError:  # not installed off Linux; ZeroGPU is Linux-only anyway
        return lambda function: function
    return spaces.GPU(duration=duration)


_attached: Any = None  # the Studio the page serves; a forked ZeroGPU worker inherits it


def attach(studio: Any) -> None:
    global _attached
    _attached = studio


def _run(request: SongRequest, think: bool = False, lora_count: int = 0, progress: Any = None, vary: Any = None) -> Any:
    """Generate ``request``; with ``vary`` (a ``VaryRequest``) run that variation instead, ``request``
    then being its parent's request (what the duration estimate reads)."""
    from backend import RunControl

    if _attached is None:
        raise RuntimeError("zerogpu.attach(studio) was not called before the first GPU task")
    if vary is not None:
        return _attached.vary(vary, RunControl(progress))
    return _attached.generate(request, RunControl(progress))


_run_on_gpu = _gpu(estimate_gpu_seconds)(_run)
_retry_on_gpu = _gpu(_retry_seconds)(_run)


LYRICS_GPU_S = 90  # a 7B writer's 700 tokens at ~20 tokens/s, with loading and margin


def _write_lyrics(request: Any, progress: Any = None) -> Any:
    """Stream the lyrics writer's text (each item the whole text so far) from a GPU worker."""
    from backend import RunControl

    if _attached is None or _attached.lyrics is None:
        raise RuntimeError("zerogpu.attach(studio) was not called, or the studio has no lyrics writer")
    yield from _attached.lyrics.write(request, RunControl(progress))


write_lyrics_on_zerogpu = _gpu(LYRICS_GPU_S)(_write_lyrics)


class GpuAborted(RuntimeError):
    """ZeroGPU aborted the task twice (usually: the song took longer than the GPU time granted)."""


def run_on_zerogpu(
    request: SongRequest, think: bool = False, lora_count: int = 0, progress: Any = None, vary: Any = None
) -> Any:
    """Run one request through the decorated entry point; one retry at twice the time."""
    try:
        return _run_on_gpu(request, think=think, lora_count=lora_count, progress=progress, vary=vary)
    except Exception as error:
        if "GPU task aborted" not in str(error):
            raise
    try:
        return _retry_on_gpu(request, think=think, lora_count=lora_count, progress=progress, vary=vary)
    except Exception as error:
        if "GPU task aborted" not in str(error):
            raise
        raise GpuAborted(
            f"The GPU task was stopped twice (asked for {_retry_seconds(request, think, lora_count)} s). "
            "Try a shorter song, fewer steps or a batch of 1, or run the studio locally."
        ) from error
