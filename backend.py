"""The model side of the studio: device choice, the lazily loaded pipeline, and runs on it.

Importing this module is cheap: torch and diffusers load on first use, so ``app.py``
starts fast. One ``Backend`` holds one ``AceStepPipeline`` per process; runs on it are
serialised by a lock, and each run reports progress and can be cancelled through its
``RunControl``. Nothing here knows about Gradio.
"""

from __future__ import annotations

import os

# Must be set before torch is imported: lets MPS fall back to the CPU for the few
# operators it lacks instead of raising.
os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")

import contextlib
import ctypes
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from checkpoints import ModelSpec, unavailable_message
from modes import SongRequest
from validation import BASE_ONLY_TASKS

if TYPE_CHECKING:
    from sampling.plan import SamplingPlan

log = logging.getLogger(__name__)
AUDIO_CODEC = ("audio_tokenizer", "audio_token_detokenizer")  # the pipeline's optional components
T = TypeVar("T")
# Runs after each denoising step: (step index, the timestep just taken, latents after the
# step) -> the latents the next step starts from (official semantics the pipeline lacks:
# repaint re-injection, latent corrections). See ``Backend.generate``.
StepHook = Callable[[int, float, Any], Any]


class ModelUnavailableError(RuntimeError):
    """The model could not be loaded; the message says why and what to do."""


class Cancelled(Exception):
    """The run was cancelled by the user; nothing it made is kept."""


@dataclass(frozen=True)
class DeviceInfo:
    device: str  # "cuda", "mps" or "cpu"
    dtype: str  # a torch dtype name

    @property
    def label(self) -> str:
        return self.device.upper()


def pick_device(preferred: str | None = None) -> DeviceInfo:
    """CUDA, then MPS, then CPU, each with the dtype that works well there."""
    import torch

    if preferred:
        device = preferred
    elif torch.cuda.is_available():
        device = "cuda"
    elif torch.backends.mps.is_available():
        device = "mps"
    else:
        device = "cpu"
    if device == "cuda":
        dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    elif device == "mps":
        # bf16 matmuls on MPS need macOS 14; before that only fp32 is safe for the VAE.
        dtype = "bfloat16" if torch.backends.mps.is_macos_or_newer(14, 0) else "float32"
    else:
        dtype = "float32"
    return DeviceInfo(device=device, dtype=dtype)


_IMPORT_LOCK = threading.Lock()
_libraries_imported = False
# One model load at a time in the process: transformers' and diffusers' from_pretrained build
# models under process-wide switches (empty-weight initialisation on the meta device), so a
# planner loading while the DiT loads came out on the meta device ("Cannot copy out of meta tensor").
MODEL_LOADS = threading.RLock()
# Names resolved through transformers' lazy module by the studio's loaders and test-model builders.
_TRANSFORMERS_NAMES = (
    "AutoModelForCausalLM", "AutoTokenizer", "PreTrainedTokenizerFast",
    "Qwen2Config", "Qwen2ForCausalLM", "Qwen3Config", "Qwen3ForCausalLM", "Qwen3Model",
)  # fmt: skip


def import_libraries() -> None:
    """Import torch, diffusers and transformers once, in one thread at a time.

    transformers resolves names lazily, and two threads doing so at once can fail with
    "cannot import name 'PreTrainedTokenizerFast' from 'transformers'" (seen when the DiT
    preloads while the first Think builds the planner). Every model load calls this first.
    """
    global _libraries_imported
    if _libraries_imported:
        return
    with _IMPORT_LOCK:
        if _libraries_imported:
            return
        import torch  # noqa: F401
        import transformers
        from diffusers import AceStepPipeline  # noqa: F401

        for name in _TRANSFORMERS_NAMES:
            getattr(transformers, name)
        _libraries_imported = True


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library is another (macOS, musl, Windows)."""
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return None
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (AttributeError, OSError, ValueError):
        return None


def release_memory() -> bool:
    """Hand the memory a finished run freed back to the system; False where the C library cannot.

    glibc keeps freed blocks of the VAE's size (30 MB per 10 s even on the tiny model) in its
    heaps, one arena per worker thread: without this, resident memory climbed by a gigabyte or
    more over a dozen Covers (README, Reliability). A trim takes about 10 ms.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class Lazy(Generic[T]):
    """A model built on first use and kept: the one way the studio loads its models.

    ``get()`` builds it once, under its own lock and ``MODEL_LOADS``; later calls return it at
    once. A failed build raises its own exception and is tried again on the next ``get()``.
    ``state`` ("not loaded", "loading", "ready", "load failed"), ``error``, ``started`` and
    ``seconds`` are for status lines.
    """

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._value: T | None = None
        self._lock = threading.Lock()
        self.state = "not loaded"
        self.error: str | None = None
        self.started = 0.0  # time.perf_counter() when the last build began
        self.seconds: float | None = None  # how long the successful build took

    @property
    def is_loaded(self) -> bool:
        return self._value is not None

    def get(self) -> T:
        value = self._value
        if value is not None:
            return value
        with MODEL_LOADS, self._lock:
            value = self._value
            if value is None:
                self.state, self.started = "loading", time.perf_counter()
                try:
                    value = self._build()
                except Exception as error:
                    self.state, self.error = "load failed", str(error)
                    raise
                self.seconds = time.perf_counter() - self.started
                self._value, self.state, self.error = value, "ready", None
            return value


ProgressFn = Callable[[float, str], None]


class RunControl:
    """One run's progress reporting and cancel flag, shared between the UI and the worker."""

    def __init__(self, on_progress: ProgressFn | None = None) -> None:
        self._cancel = threading.Event()
        self._on_progress = on_progress
        # Asked at every check: whether whoever wanted the run has gone (shared with its parts).
        self._abandoned: list[Callable[[], bool]] = []
        self.steps_done = 0
        # Seconds per stage of the run ("load", "dit", "decode"), shared with its parts.
        self.timings: dict[str, float] = {}

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def stop_when(self, abandoned: Callable[[], bool]) -> None:
        """Also cancel at the next ``check()`` once ``abandoned()`` is true: e.g. when the
        client that asked for the run cancelled it or went away."""
        self._abandoned.append(abandoned)

    def check(self) -> None:
        if not self._cancel.is_set() and any(abandoned() for abandoned in self._abandoned):
            self._cancel.set()
        if self._cancel.is_set():
            raise Cancelled("cancelled")

    def report(self, fraction: float, message: str) -> None:
        if self._on_progress is not None:
            self._on_progress(min(max(fraction, 0.0), 1.0), message)

    def part(self, start: float, end: float) -> RunControl:
        """A control for one stage of this run: the same cancel flag, its progress mapped into
        ``start``-``end`` of this run's bar."""
        child = RunControl(lambda fraction, message: self.report(start + (end - start) * fraction, message))
        child._cancel = self._cancel
        child._abandoned = self._abandoned
        child.timings = self.timings
        return child


def load_pipeline(
    spec: ModelSpec,
    device: DeviceInfo,
    offload: bool = False,
    compile_dit: bool = False,
):
    """Load the pipeline for ``spec`` through ``from_pretrained`` and place it on ``device``."""
    import torch
    from diffusers import AceStepPipeline

    if spec.is_tiny:
        from tools.tiny_model import ensure_tiny_model

        ensure_tiny_model(Path(spec.source).parent, turbo=spec.variant == "turbo")
    try:
        pipe = AceStepPipeline.from_pretrained(spec.source, dtype=getattr(torch, device.dtype))
    except (OSError, ValueError) as error:
        raise ModelUnavailableError(unavailable_message(spec, error)) from error
    return place_pipeline(pipe, device, offload, compile_dit)


def place_pipeline(pipe, device: DeviceInfo, offload: bool = False, compile_dit: bool = False):
    """Ready a loaded pipeline for the studio: quiet, tiled VAE, on ``device`` (or offloaded), compiled."""
    pipe.set_progress_bar_config(disable=True)
    # Tiling bounds VAE memory on long songs; diffusers leaves it off.
    pipe.vae.enable_tiling()
    if offload and device.device != "cpu":
        pipe.enable_model_cpu_offload(device=device.device)
    else:
        if offload:
            log.warning("CPU offload needs an accelerator; running on the CPU without it")
        pipe.to(device.device)
    if compile_dit:
        # Regional compilation: each repeated DiT block compiles once and is reused.
        for block in pipe.transformer.layers:
            block.compile()
    return pipe


@contextlib.contextmanager
def _component_progress(report: Callable[[float], None]):
    """Report the share of pipeline components ``from_pretrained`` has loaded (the header's
    "loading 42%"), by wrapping the progress bar diffusers draws over them for the duration."""
    try:
        from diffusers.utils import logging as diffusers_logging
    except ImportError:
        yield
        return
    original = diffusers_logging.tqdm

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(original, name)

        def __call__(self, iterable=None, *args: Any, **kwargs: Any):
            bar = original(iterable, *args, **kwargs)
            if iterable is None or not str(kwargs.get("desc", "")).startswith("Loading pipeline components"):
                return bar
            items = list(bar)

            def counted():
                for done, item in enumerate(items):
                    report(done / max(len(items), 1))
                    yield item
                report(1.0)

            return counted()

    diffusers_logging.tqdm = Counting()
    try:
        yield
    finally:
        diffusers_logging.tqdm = original


class Backend:
    """The process's one pipeline, loaded on first use.

    ``loader`` is injectable so that tests can stand in for hardware this machine
    lacks; by default it is ``load_pipeline``.
    """

    def __init__(
        self,
        spec: ModelSpec,
        device: DeviceInfo | None = None,
        offload: bool = False,
        compile_dit: bool = False,
        loader: Callable[..., Any] | None = None,
    ) -> None:
        self.spec = spec
        self._device = device
        self.offload = offload
        self.compile_dit = compile_dit
        self._loader = loader or load_pipeline
        self._pipe: Lazy[Any] = Lazy(self._load)
        self._run_lock = threading.Lock()
        # Of the pipeline's components loaded, once loading them has begun (not while downloading).
        self.load_fraction: float | None = None

    def _loaded_part(self, fraction: float) -> None:
        self.load_fraction = fraction

    @property
    def device(self) -> DeviceInfo:
        if self._device is None:
            self._device = pick_device()
        return self._device

    @property
    def is_loaded(self) -> bool:
        return self._pipe.is_loaded

    @property
    def state(self) -> str:
        return self._pipe.state

    @property
    def load_seconds(self) -> float | None:
        return self._pipe.seconds

    @property
    def variant(self) -> str:
        """The loaded config is the authority on turbo; before loading, the registry guess."""
        if self._pipe.is_loaded and self._pipe.get().is_turbo:
            return "turbo"
        return self.spec.variant

    def is_cached(self) -> bool:
        """Whether loading needs no download (a local folder, or the Hub cache has it)."""
        if self.spec.is_local:
            return True
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(self.spec.source, "model_index.json"), str)

    def status(self) -> str:
        """One line for the header: state, device and model."""
        state = self.state
        if state == "loading":
            elapsed = time.perf_counter() - self._pipe.started
            fraction = self.load_fraction
            state = f"loading {fraction:.0%}" if fraction is not None else f"loading ({elapsed:.0f} s)"
        parts = [state, self.device.label, self.spec.label]
        if self.spec.is_tiny:
            parts.append("test model: outputs noise")
        return " · ".join(parts)

    def load(self, control: RunControl | None = None):
        """Load the pipeline once; later calls return it at once."""
        if control is not None and not self._pipe.is_loaded:
            control.report(0.0, f"Loading {self.spec.label} on {self.device.label}…")
        return self._pipe.get()

    def _load(self):
        import_libraries()
        self.load_fraction = None
        try:
            with _component_progress(self._loaded_part):
                return self._loader(self.spec, self.device, offload=self.offload, compile_dit=self.compile_dit)
        except ModelUnavailableError:
            raise
        except Exception as error:
            # Any failure here is the model's (a damaged file, too little memory), never
            # the outputs': say so, so that the page does not blame the disk.
            raise ModelUnavailableError(f"The model {self.spec.label} could not be loaded: {error}") from error

    def check_supports(self, request: SongRequest) -> None:
        """Refuse tasks the loaded checkpoint was not trained for, before any model time."""
        task = getattr(request, "task_type", "")
        if task in BASE_ONLY_TASKS and self.variant != "base":
            raise ValueError(
                f"task_type: {task!r} needs a base checkpoint, and {self.spec.label} is {self.variant}; "
                "start the studio with --model xl-base (or base)"
            )
        # Cover conditions on the source's 5 Hz codes, Think renders the planner's codes: both go through
        # the audio tokenizer/detokenizer, which a checkpoint may lack (diffusers prepare_src_latents).
        needs = "think" if request.plans else "audio_codes" if str(getattr(request, "audio_codes", "")).strip() else ""
        needs = "src_audio" if request.mode == "cover" else needs
        if needs and not self.has_audio_codec():
            what = {"think": "Think", "audio_codes": "A plan's codes", "src_audio": "Cover"}[needs]
            raise ValueError(
                f"{needs}: {what} needs the checkpoint's audio tokenizer and detokenizer, and {self.spec.label} "
                "has none; turn Think off, or start the studio with a checkpoint that has them"
            )

    def has_audio_codec(self) -> bool:
        """Whether the checkpoint has the audio tokenizer and detokenizer (codes, Think, Cover need them).

        Read from the loaded pipeline, else from the checkpoint's ``model_index.json`` (a local folder
        or the Hub cache) so that a refusal costs no load; loaded when neither says."""
        if not self._pipe.is_loaded:
            index = self._model_index()
            if index is not None:
                return all(isinstance(index.get(name), list) and None not in index[name] for name in AUDIO_CODEC)
        pipe = self.load()
        return all(getattr(pipe, name, None) is not None for name in AUDIO_CODEC)

    def _model_index(self) -> dict[str, Any] | None:
        import json

        path: Any = Path(self.spec.source) / "model_index.json" if self.spec.is_local else None
        if path is None:
            from huggingface_hub import try_to_load_from_cache

            path = try_to_load_from_cache(self.spec.source, "model_index.json")
        try:
            return json.loads(Path(path).read_text(encoding="utf-8")) if isinstance(path, (str, Path)) else None
        except (OSError, ValueError):
            return None

    def normalise(self, request: SongRequest) -> SongRequest:
        """Settings the checkpoint dictates: turbo is guidance-distilled, so no CFG; DCW left to the
        checkpoint is on for turbo only (official ``_resolve_dcw_enabled``), saved as what ran."""
        turbo = self.variant == "turbo"
        if turbo and request.guidance_scale != 1.0:
            request = replace(request, guidance_scale=1.0)
        if request.dcw_enabled is None:
            request = replace(request, dcw_enabled=turbo)
        return request

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """The pipeline to the caller alone while the block runs (the run lock held): no run is
        inside it meanwhile. For work that changes the loaded model, such as its LoRA adapters."""
        with self._run_lock:
            yield

    def run(self, work: Callable[[Any], Any], control: RunControl) -> Any:
        """``work(pipe)`` with the pipeline to itself (the run lock held), for runs that drive
        the pipeline's components directly (FlowEdit)."""
        pipe = self.load(control)
        control.check()
        try:
            with self._run_lock:
                control.check()
                return work(pipe)
        finally:
            release_memory()

    def generate(
        self,
        kwargs: dict[str, Any],
        seeds: list[int],
        control: RunControl,
        rng_seed: int | None = None,
        before: Callable[[Any], None] | None = None,
        step_hooks: Sequence[StepHook] = (),
        plan: SamplingPlan | None = None,
    ) -> np.ndarray:
        """Run the pipeline; returns float32 audio ``[takes, 2, samples]`` at 48 kHz.

        ``kwargs`` are ``AceStepPipeline.__call__`` arguments (audio as numpy ``[2, samples]``).
        Raises ``Cancelled`` within one step of ``control.cancel()``, never decoding. The global
        torch RNG is seeded with ``rng_seed`` (default: the first take's seed): the pipeline samples
        the VAE encoding of source audio from it. ``before(pipe)`` runs first, under the run lock.
        ``step_hooks`` run in order after every step and may replace the latents; a hook with an
        ``attach(pipe)`` method is attached before the call and detached (by what it returned) after.
        ``plan`` (from ``sampling.plan``) runs the official schedule and per-step sampling, as one or
        more calls.
        """
        import torch

        from sampling.plan import SamplingPlan, run_plan

        loading = time.perf_counter()
        pipe = self.load(control)
        control.timings["load"] = round(time.perf_counter() - loading, 3)
        control.check()
        steps = plan.steps if plan is not None else kwargs["num_inference_steps"]
        denoised = [0.0]

        def on_step(step: int, timestep: float, latents: Any) -> Any:
            control.steps_done = step + 1
            denoised[0] = time.perf_counter()
            # Raising here leaves the pipeline before its VAE decode, so a cancelled
            # run costs at most one more step.
            control.check()
            message = f"Denoising step {step + 1}/{steps}" if step + 1 < steps else "Decoding audio…"
            control.report(0.05 + 0.85 * (step + 1) / steps, message)
            for hook in step_hooks:
                latents = hook(step, timestep, latents)
            return latents

        call_kwargs = {
            name: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
            if isinstance(value, np.ndarray)
            else value
            for name, value in kwargs.items()
        }
        detach: list[Callable[[], None]] = []
        try:
            with self._run_lock:
                control.check()
                if before is not None:
                    before(pipe)  # e.g. set the LoRA stack: nothing else is inside the pipeline now
                # A hook with attach(pipe) watches the run (e.g. the DiT's inputs); it stops when the run ends.
                detach += [hook.attach(pipe) for hook in step_hooks if hasattr(hook, "attach")]
                control.report(0.05, "Encoding prompt…")
                # CPU generators give the same starting noise on every device.
                generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]

                def reseed() -> None:
                    torch.manual_seed(seeds[0] if rng_seed is None else rng_seed)

                reseed()
                started = time.perf_counter()
                plan = plan if plan is not None else SamplingPlan.plain(steps)
                output = run_plan(pipe, call_kwargs, generators, plan, on_step, reseed)
                audio = output.float().cpu().numpy()
        finally:
            for stop in detach:
                stop()
            release_memory()  # a cancelled or failed run's buffers too
        # Encoding and every denoising step, then the VAE decode: what the ZeroGPU estimate is calibrated on.
        control.timings["dit"] = round(denoised[0] - started, 3)
        control.timings["decode"] = round(time.perf_counter() - denoised[0], 3)
        return audio
