"""GPU time on Hugging Face ZeroGPU: how long to ask for, and the decorated entry points.

On ZeroGPU every GPU call is scheduled for a stated duration: ask too little and the task
is aborted mid-song, ask too much and the visitor waits longer in the queue and spends
more of a small daily quota. ``estimate_gpu_seconds`` reads the request by name and is
clamped to what ZeroGPU grants. Its rates start from priors and are then calibrated from
the stage timings the Space's own runs measure (``Calibration``).

``spaces.GPU`` must wrap its function when the module is imported (ZeroGPU registers tasks
at start-up), so the entry points below are decorated here, at import time; off ZeroGPU the
decorator is an identity and the studio calls the engine directly so that Cancel reaches
the run.

On ZeroGPU the decorated function runs in a forked worker: its arguments and result are
pickled across, so they are plain data (a frozen request, a ``Run``), and the studio is
found through the module-level ``attach``-ed instance that the fork inherits.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modes import ExtendRequest, SongRequest
from validation import CODES_PER_SECOND

log = logging.getLogger(__name__)

MIN_GPU_S = 20  # the scheduler's granularity in practice; shorter asks gain nothing
MAX_GPU_S = 300  # ZeroGPU refuses longer single tasks (FACTS.md: long requests capped ~300 s)
RETRY_FACTOR = 2  # an aborted task is tried once more with twice the time

# Prior rates, in seconds on a ZeroGPU H200 slice, used until the Space has measured its own
# (``Calibration`` below). No GPU machine was lent to the sessions that wrote this, so they come
# from ACE-Step 1.5's published speed (turbo, 8 steps: under 2 s for a full 4-minute song on an
# A100, i.e. ~0.06 s per step per minute of audio for the 2B DiT) doubled for the XL DiT and
# again for safety; VAE decode and the planner are sized the same way.
WARM_UP_S = 10.0  # a fresh worker moving the pipeline onto the GPU
DIT_STEP_S_PER_MIN = 0.25  # one DiT step over one minute of audio, batch 1, no guidance
VAE_S_PER_MIN = 1.0  # decode (and encode, for a source song) of one minute of stereo audio
PLANNER_S_PER_TOKEN = 0.04  # the 1.7B planner with LM guidance: ~25 tokens/s
PLANNER_META_TOKENS = 150  # its metadata and caption before the audio codes
PLANNED_SONG_S = 240.0  # the length budgeted when the planner chooses it
LORA_LOAD_S = 2.0  # each adapter, the first time a worker sees it
LORA_STEP_FACTOR = 0.05  # extra DiT time per active adapter

# Measured rates replace the priors once a rate has MIN_SAMPLES measurements on this model and
# device: the 90th percentile of the recent ones, times MARGIN (an under-ask aborts the song).
SAMPLES_KEPT = 50
MIN_SAMPLES = 3
MARGIN = 1.25


def song_minutes(request: SongRequest) -> float:
    """The length the model will render, in minutes (a source song's length is read from its header)."""
    seconds = getattr(request, "audio_duration", None) or 0.0  # Extend, Edit and FlowEdit have none
    if not seconds and request.plans:
        seconds = PLANNED_SONG_S  # Think picks the length: budget a full song
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


def dit_work(steps: int, minutes: float, batch: int, guidance: bool, lora_count: int) -> float:
    """DiT cost in units of one step over one minute of audio (guidance doubles the batch)."""
    return steps * minutes * batch * (2 if guidance else 1) * (1.0 + LORA_STEP_FACTOR * lora_count)


def planner_tokens(minutes: float) -> float:
    """Tokens the planner writes for a song: its metadata, then 5 audio codes a second."""
    return PLANNER_META_TOKENS + CODES_PER_SECOND * 60 * minutes


@dataclasses.dataclass(frozen=True)
class Rates:
    """Seconds per unit of work; ``measured`` names the rates that came from this Space's runs."""

    dit_s_per_step_min: float = DIT_STEP_S_PER_MIN
    vae_s_per_min: float = VAE_S_PER_MIN
    planner_s_per_token: float = PLANNER_S_PER_TOKEN
    measured: tuple[str, ...] = ()


class Calibration:
    """GPU rates measured from finished runs, for one model on one device, kept in a JSON file.

    Each run's ``settings.json`` carries the seconds its DiT (with encoding), VAE decode and
    planner took; divided by the work the request asked for, they give rate samples. The
    estimate uses the 90th percentile of the last ``SAMPLES_KEPT`` per rate, times ``MARGIN``,
    once there are ``min_samples``; until then the priors above.
    """

    RATES = ("dit_s_per_step_min", "vae_s_per_min", "planner_s_per_token")

    def __init__(self, path: Path | None, key: str, min_samples: int = MIN_SAMPLES) -> None:
        self.path = path
        self.key = key
        self.min_samples = min_samples
        self._lock = threading.Lock()
        self._ignored: set[str] = set()
        self.samples: dict[str, list[float]] = {name: [] for name in self.RATES}
        if path is not None and path.is_file():
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
                if stored.get("key") == key:
                    for name in self.RATES:
                        self.samples[name] = [float(v) for v in stored["samples"].get(name, []) if float(v) > 0]
            except (ValueError, KeyError, TypeError, AttributeError) as error:
                log.warning("ignoring unreadable GPU timings in %s (%s); using the prior rates", path, error)

    @staticmethod
    def key_for(source: str, device: str) -> str:
        """Which measurements belong together: one model source on one device."""
        return f"{source} on {device}"

    def record(self, settings: dict[str, Any]) -> None:
        """Add the rates measured by one finished run (its ``settings.json`` content)."""
        key = self.key_for(settings["model"]["source"], settings["device"])
        if key != self.key:  # another model's or device's speed says nothing about this one
            if key not in self._ignored:
                self._ignored.add(key)
                log.info("GPU timings of %s are not used for %s", key, self.key)
            return
        timings, request = settings.get("timings_s", {}), settings["request"]
        minutes = max(settings["output"]["duration_s"], 10.0) / 60.0
        batch = len(settings.get("takes", [])) or int(request.get("batch_size", 1))
        found: dict[str, float] = {}
        if timings.get("dit", 0) > 0 and timings.get("decode", 0) > 0:
            work = dit_work(
                int(request["num_inference_steps"]),
                minutes,
                batch,
                float(request.get("guidance_scale", 1.0)) > 1.0,
                len(settings.get("loras", [])),
            )
            found["dit_s_per_step_min"] = timings["dit"] / work
            found["vae_s_per_min"] = timings["decode"] / (minutes * batch)
        planner = (settings.get("plan") or {}).get("planner", {})
        if planner.get("tokens") and planner.get("seconds"):
            found["planner_s_per_token"] = planner["seconds"] / planner["tokens"]
        if not found:
            return
        with self._lock:
            for name, value in found.items():
                self.samples[name] = [*self.samples[name], value][-SAMPLES_KEPT:]
            self._save()

    def rates(self) -> Rates:
        with self._lock:
            measured = {
                name: MARGIN * _percentile(values, 0.9)
                for name, values in self.samples.items()
                if len(values) >= self.min_samples
            }
        return Rates(**measured, measured=tuple(measured))

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            temporary.write_text(json.dumps({"key": self.key, "samples": self.samples}, indent=1), encoding="utf-8")
            temporary.replace(self.path)
        except OSError as error:  # the estimate still works from memory
            log.warning("could not save GPU timings to %s: %s", self.path, error)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


_calibration: Calibration | None = None  # set by ``attach``; None: the priors


def estimate_gpu_seconds(request: SongRequest, think: bool = False, lora_count: int = 0, **_: Any) -> int:
    """GPU seconds to ask ZeroGPU for this request, within ``[MIN_GPU_S, MAX_GPU_S]``.

    Takes the same arguments as the decorated entry points (``spaces.GPU`` calls it with
    them), read by name. Uses the rates measured on this Space once there are enough.
    """
    return int(min(max(math.ceil(predict_seconds(request, think, lora_count)), MIN_GPU_S), MAX_GPU_S))


def predict_seconds(
    request: SongRequest,
    think: bool = False,
    lora_count: int = 0,
    rates: Rates | None = None,
    warm_up: float = WARM_UP_S,
) -> float:
    """The unclamped estimate: warm-up, DiT, VAE, planner and LoRA loading, at ``rates``
    (default: the attached calibration's, or the priors)."""
    if rates is None:
        rates = _calibration.rates() if _calibration is not None else Rates()
    minutes = song_minutes(request)
    batch = request.batch_size
    dit = rates.dit_s_per_step_min * dit_work(
        request.num_inference_steps, minutes, batch, request.guidance_scale > 1.0, lora_count
    )
    vae = rates.vae_s_per_min * minutes * batch * (2 if getattr(request, "src_audio", "") else 1)
    # One plan serves every take of a batch.
    planner = rates.planner_s_per_token * planner_tokens(minutes) if think else 0.0
    return warm_up + dit + vae + planner + LORA_LOAD_S * lora_count


def _retry_seconds(request: SongRequest, think: bool = False, lora_count: int = 0, **_: Any) -> int:
    return min(RETRY_FACTOR * estimate_gpu_seconds(request, think, lora_count), MAX_GPU_S)


def _gpu(duration: int | Callable[..., int]) -> Callable[[Callable], Callable]:
    try:
        import spaces
    except ImportError:  # not installed off Linux; ZeroGPU is Linux-only anyway
        return lambda function: function
    return spaces.GPU(duration=duration)


_attached: Any = None  # the Studio the page serves; a forked ZeroGPU worker inherits it


def attach(studio: Any, calibration: Calibration | None = None) -> None:
    """Serve ``studio`` from the GPU entry points; ``calibration`` (measured rates) feeds the estimate."""
    global _attached, _calibration
    _attached = studio
    _calibration = calibration


def calibration_for(studio: Any) -> Calibration:
    """The calibration of ``studio``'s model and device, kept beside its outputs (hidden from the library)."""
    backend = studio.backend
    key = Calibration.key_for(backend.spec.source, backend.device.device)
    return Calibration(Path(studio.store.root) / ".gpu-timings.json", key)


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


IDEA_GPU_S = 60  # the planner's metadata and caption (~150 tokens at ~25 tokens/s), with loading and margin


def _plan_idea(idea: str, seed: int, progress: Any = None) -> Any:
    """Start from an idea on a GPU worker: the planner's caption and metadata (a ``Plan``)."""
    from backend import RunControl

    if _attached is None or _attached.planner is None:
        raise RuntimeError("zerogpu.attach(studio) was not called, or the studio has no planner")
    return _attached.planner.plan_from_idea(idea, seed=seed, control=RunControl(progress))


plan_idea_on_zerogpu = _gpu(IDEA_GPU_S)(_plan_idea)

DESCRIBE_GPU_S = 120  # a 10-minute song's codes and up to 2,048 lyric tokens, with loading and margin


def _describe(src_audio: str, seed: int | None, progress: Any = None) -> Any:
    """Describe this song on a GPU worker (a ``Description``)."""
    from backend import RunControl

    if _attached is None:
        raise RuntimeError("zerogpu.attach(studio) was not called before the first GPU task")
    return _attached.describe(src_audio, RunControl(progress), seed=seed)


describe_on_zerogpu = _gpu(DESCRIBE_GPU_S)(_describe)


STEMS_GPU_S = 120  # Demucs over a 10-minute take with loading, writing and margin


def _split_stems(run_id: str, take: int, stem_model: str, progress: Any = None) -> Any:
    """Split a saved take into stems on a GPU worker; the files are written into its run folder."""
    from backend import RunControl

    if _attached is None:
        raise RuntimeError("zerogpu.attach(studio) was not called before the first GPU task")
    return _attached.stems(run_id, take, stem_model, RunControl(progress))


stems_on_zerogpu = _gpu(STEMS_GPU_S)(_split_stems)


LYRICS_CHECK_GPU_S = 180  # Demucs and Whisper over a 10-minute take, a repaint of its flagged lines, and margin


def _check_lyrics(run_id: str, take: int, picks: Any = None, repair: bool = False, progress: Any = None) -> Any:
    """Check a saved take's lyrics (``repair``: re-make its flagged or picked lines and check
    again) on a GPU worker; the LRC, tags and the repaired take are written into the run folder.
    Returns the check (a repair: the pair of checks ``repair_take`` returns)."""
    from backend import RunControl
    from lyrics_check.repair import check_take, repair_take

    if _attached is None:
        raise RuntimeError("zerogpu.attach(studio) was not called before the first GPU task")
    control = RunControl(progress)
    if repair:
        return repair_take(_attached, run_id, take, control, picks)
    return check_take(_attached, run_id, take, control)


lyrics_check_on_zerogpu = _gpu(LYRICS_CHECK_GPU_S)(_check_lyrics)


class GpuAborted(RuntimeError):
    """ZeroGPU aborted the task twice (usually: the song took longer than the GPU time granted)."""


def run_on_zerogpu(
    request: SongRequest, think: bool = False, lora_count: int = 0, progress: Any = None, vary: Any = None
) -> Any:
    """Run one request through the decorated entry point; one retry at twice the time."""
    try:
        return _measured(_run_on_gpu(request, think=think, lora_count=lora_count, progress=progress, vary=vary))
    except Exception as error:
        if "GPU task aborted" not in str(error):
            raise
    try:
        return _measured(_retry_on_gpu(request, think=think, lora_count=lora_count, progress=progress, vary=vary))
    except Exception as error:
        if "GPU task aborted" not in str(error):
            raise
        raise GpuAborted(
            f"The GPU task was stopped twice (asked for {_retry_seconds(request, think, lora_count)} s). "
            "Try a shorter song, fewer steps or a batch of 1, or run the studio locally."
        ) from error


def _measured(run: Any) -> Any:
    """Feed a finished run's stage timings to the calibration (in the main process: the worker's
    result comes back here), then pass the run on."""
    settings = getattr(run, "settings", None)
    if _calibration is not None and isinstance(settings, dict):
        try:
            _calibration.record(settings)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as error:  # never lose the song over it
            log.warning("could not read the run's GPU timings: %s", error)
    return run
