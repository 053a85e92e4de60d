"""Runs from the page and the named API: the one guard every piece of model work goes through
(``run_guard``: one cancellable run per browser session, the engine's plain exceptions turned
into ``gr.Error`` messages, the work sent to its ZeroGPU entry point on a Space), and the
per-mode API handlers with their docstrings (what the API page and MCP clients show).

Cancel and disconnect: Gradio 6.31 never stops a running sync handler. Its ``/cancel`` route
(``gradio_client``'s ``job.cancel()``, an event's ``cancels=``) cancels the queue's task, which
frees the concurrency slot and forgets the event while the handler's thread runs on; a client
whose event stream closes only has its events marked not alive. ``ActiveRuns.start`` therefore
has every run ask Gradio's queue at each ``RunControl.check()`` (every denoising step) whether
its event is still wanted, and stop without saving if not. A cancelled event always stops. A
disconnected API client's run stops too, so that it frees the one GPU slot; the page's own song
runs (``keep_on_disconnect``) finish and are saved, so that a reloaded page finds them in the
Library. At most ``MAX_JOBS_PER_CLIENT`` GPU jobs per client are queued or running, checked
before queueing by ``client_job_limit`` (every ``RUN_OPTIONS`` event's validator).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import gradio as gr
from gradio.context import LocalContext

from backend import Cancelled, ModelUnavailableError, RunControl
from modes import REQUEST_TYPES, FlowEditRequest
from outputs import SETTINGS_FILE, Run, load_settings
from serving.env import on_space, on_zerogpu
from serving.zerogpu import GpuAborted, run_on_zerogpu
from studio import Studio
from tooltips import TOOLTIPS
from ui.controls import build_panel
from ui.history import RunOwners
from ui.progress import RunBoard
from validation import RANDOM_SEED, safe_message
from variations import DEFAULT_VARIANCE, VaryRequest

if TYPE_CHECKING:
    from ui.page import Page

log = logging.getLogger("ace_studio")
T = TypeVar("T")

GPU_CONCURRENCY_ID = "gpu"  # every event that runs the model shares one slot
GPU_EVENT_TIME_LIMIT_S = 3600  # a 10-minute song at 50 steps on a laptop CPU fits; a hung run does not
# Per Gradio session (a browser tab, a gradio_client Client): one rendering and one waiting.
MAX_JOBS_PER_CLIENT = 2
# Per network address, off a Space: a script that invents a new session id for every request
# is still one machine. (On a Space every visitor arrives through the same proxy; this
# machine's own user, on loopback, could run batch.py anyway.)
MAX_JOBS_PER_ADDRESS = 4
BUSY_MESSAGE = f"You already have {MAX_JOBS_PER_CLIENT} songs queued or rendering; wait for one to finish or cancel it."
BUSY_ADDRESS_MESSAGE = (
    f"This device already has {MAX_JOBS_PER_ADDRESS} songs queued or rendering; wait for one to finish or cancel it."
)


def _address(request: Any) -> str | None:
    """The client's network address, or None for this machine itself (loopback)."""
    host = getattr(getattr(request, "client", None), "host", None)
    try:
        return None if host is None or ipaddress.ip_address(host).is_loopback else host
    except ValueError:  # not an IP address (a test client's name)
        return host


def _busy(request: gr.Request | None, events: list[Any]) -> str | None:
    """Why this request may not queue another GPU job, or None."""
    gpu = [event for event in events if event.concurrency_id == GPU_CONCURRENCY_ID]
    session = request.session_hash if request is not None else None
    if session and sum(event.session_hash == session for event in gpu) >= MAX_JOBS_PER_CLIENT:
        return BUSY_MESSAGE
    address = _address(request)
    if address and not on_space() and sum(_address(event.request) == address for event in gpu) >= MAX_JOBS_PER_ADDRESS:
        return BUSY_ADDRESS_MESSAGE
    return None


def one_admission_at_a_time(blocks: gr.Blocks) -> None:
    """Make joining the queue atomic: Gradio 6.31 checks the queue's size, then awaits the
    validator (``client_job_limit``), then registers the event, so requests arriving together all
    pass both checks before any of them is counted (measured: 40 of 40 clients got past a queue
    of 8). One join at a time costs a few milliseconds each; the runs themselves are not held up."""
    queue = blocks._queue
    push = queue.push
    lock = asyncio.Lock()

    async def serialised_push(*args: Any, **kwargs: Any) -> Any:
        async with lock:
            return await push(*args, **kwargs)

    queue.push = serialised_push


async def client_job_limit(request: gr.Request, *args: Any, **kwargs: Any) -> Any:
    """A Gradio validator (it runs before queueing): refuses a GPU job beyond
    ``MAX_JOBS_PER_CLIENT`` per session or ``MAX_JOBS_PER_ADDRESS`` per address, in words shown
    on the event's first input.

    Joins pass one at a time (``one_admission_at_a_time``), so the count is exact.
    """
    count = len(args) + len(kwargs)  # a validator answers once per input
    blocks = LocalContext.blocks.get(None)
    queue = getattr(blocks, "_queue", None)
    reason = _busy(request, list(queue.event_ids_to_events.values())) if count and queue is not None else None
    if reason:
        refusal = gr.validate(False, reason)
        return refusal if count == 1 else [refusal, *[None] * (count - 1)]
    return None if count == 1 else [None] * count


RUN_OPTIONS: dict[str, Any] = dict(
    concurrency_id=GPU_CONCURRENCY_ID,
    concurrency_limit=1,
    time_limit=GPU_EVENT_TIME_LIMIT_S,
    validator=client_job_limit,
)


def abandoned_check(keep_on_disconnect: bool = False) -> Callable[[], bool] | None:
    """For the queued Gradio event this handler thread serves: a check that says whether its
    client cancelled it (or, unless ``keep_on_disconnect``, went away); ``None`` outside one."""
    blocks = LocalContext.blocks.get(None)
    event_id = LocalContext.event_id.get(None)
    queue = getattr(blocks, "_queue", None)
    if queue is None or event_id is None or event_id not in queue.event_ids_to_events:
        return None
    events = queue.event_ids_to_events  # Gradio drops a cancelled event from it at once

    def abandoned() -> bool:
        event = events.get(event_id)
        return event is None or (not keep_on_disconnect and not event.alive)

    return abandoned


SONG_LANE = "song"
LYRICS_LANE = "lyrics"


class ActiveRuns:
    """The run each browser session has in flight, so that Cancel reaches the right one."""

    def __init__(self, owners: RunOwners | None = None) -> None:
        self._runs: dict[tuple[str, str], RunControl] = {}  # (session, lane) -> its run
        self._lock = threading.Lock()
        self.owners = owners  # on a shared studio (a Space): who made which run; None: every run is the user's
        self.board = RunBoard()  # each browser's latest song run, for a page reloaded mid-run

    def check_owner(self, session: str, run_id: str, field: str = "run_id") -> None:
        """On a shared studio, refuse (``ValueError``) a run this session did not make, as if it did not exist."""
        if self.owners is not None and not self.owners.owns(session, run_id):
            raise ValueError(f"{field}: no run called {str(run_id)[:80]!r} was made in this browser")

    def start(self, key: str, control: RunControl, keep_on_disconnect: bool = False, lane: str = SONG_LANE) -> None:
        """Register this session's run in its lane (a song, or lyrics beside it); call it in the
        handler's thread, where Gradio's event is known: the run also stops once Gradio cancels
        the event or (unless ``keep_on_disconnect``) once its client disconnects."""
        abandoned = abandoned_check(keep_on_disconnect)
        if abandoned is not None:
            control.stop_when(abandoned)
        with self._lock:
            self._runs[key, lane] = control

    def finish(self, key: str, control: RunControl, lane: str = SONG_LANE) -> None:
        with self._lock:
            if self._runs.get((key, lane)) is control:
                del self._runs[key, lane]

    def cancel(self, key: str, lane: str | None = None) -> bool:
        """Cancel this session's run in ``lane``; with no lane, its song, or else whatever it runs."""
        with self._lock:
            if lane is not None:
                control = self._runs.get((key, lane))
            else:
                mine = [lane_control for (session, _), lane_control in self._runs.items() if session == key]
                control = self._runs.get((key, SONG_LANE)) or (mine[0] if mine else None)
        if control is None:
            return False
        control.cancel()
        return True


class ProgressRelay:
    """``gr.Progress`` as the engine's ``(fraction, message)`` callback; a class, not a
    lambda, so that ZeroGPU can pickle it into its worker."""

    def __init__(self, progress: gr.Progress) -> None:
        self.progress = progress

    def __call__(self, fraction: float, message: str) -> None:
        self.progress(fraction, desc=message)


def session_key(request: gr.Request | None) -> str:
    return (request.session_hash if request is not None else None) or "anonymous"


def run_files(run: Run) -> list[str]:
    files = [str(path) for take in run.takes for path in take.files.values()]
    return [*files, str(run.settings_path)]


@dataclass(frozen=True)
class SongRun:
    """How a song run starts: the mode that reads its values, a fresh seed (Retake), and
    whether it finishes when its client goes away (``keep_on_disconnect``: see ``ActiveRuns.start``)."""

    mode: str = "generate"
    new_seed: bool = False
    keep_on_disconnect: bool = False


def run_generate(
    studio: Studio,
    runs: ActiveRuns,
    values: dict[str, Any],
    session: str,
    progress: Callable[[float, str], None] | None,
    how: SongRun = SongRun(),
) -> Run | None:
    """Validate, generate and save one request; ``None`` when the user cancelled.

    Turns the studio's plain exceptions into ``gr.Error`` messages; nothing is saved
    on any failure.
    """
    try:
        request = REQUEST_TYPES[how.mode].from_values(values)
    except ValueError as error:
        raise gr.Error(safe_message(str(error)), title="Check the settings") from error
    if how.new_seed:
        request = request.with_seed(-1)
    thinking = request.plans
    job = Job(
        lambda control: studio.generate(request, control),
        lambda: run_on_zerogpu(request, think=thinking, lora_count=len(request.lora_items()), progress=progress),
        keep_on_disconnect=how.keep_on_disconnect,
    )
    return guarded_run(runs, session, progress, job)


def run_vary(
    studio: Studio,
    runs: ActiveRuns,
    values: dict[str, Any],
    session: str,
    progress: Callable[[float, str], None] | None,
    keep_on_disconnect: bool = False,
) -> Run | None:
    """Vary a saved run (``parent_run_id``, ``variance``, ``seed``); ``None`` when cancelled."""
    try:
        request = VaryRequest.from_values(values).validate()
        runs.check_owner(session, request.parent_run_id, "parent_run_id")
        settings = load_settings(studio.store.run_folder(request.parent_run_id) / SETTINGS_FILE)
    except ValueError as error:
        raise gr.Error(safe_message(str(error)), title="Check the settings") from error

    def on_gpu() -> Run:
        try:  # the parent's request sizes the GPU time
            parent = REQUEST_TYPES[settings["mode"]].from_values(settings["request"])
        except (KeyError, ValueError):
            parent = REQUEST_TYPES["generate"]()
        return run_on_zerogpu(parent, progress=progress, vary=request)

    job = Job(lambda control: studio.vary(request, control), on_gpu, keep_on_disconnect=keep_on_disconnect)
    return guarded_run(runs, session, progress, job)


@dataclass(frozen=True)
class Words:
    """How the guard words one kind of work's failures: titles, and the prefixes of messages."""

    failed: str = "Could not generate"  # the title when the request is refused (ValueError)
    unavailable: str = "Model unavailable"  # the title when its model cannot be loaded
    crashed: str = "Generation failed"  # the message's start when the model itself fails
    disk: str = "Could not write the output files"  # the message's start when a write fails
    cancelled: str = ""  # said as an error when cancelled; "" answers None instead
    stopped: str = ""  # said as a note when cancelled, keeping what streamed so far
    refused: tuple[type[Exception], ...] = ()  # more exception types worded like a refused request


SONG_WORDS = Words()


@dataclass(frozen=True)
class Job(Generic[T]):
    """One piece of model work for the guard: ``work`` runs it here with the run's control;
    ``on_gpu`` (when the work needs the GPU) runs it through a ZeroGPU entry point instead."""

    work: Callable[[RunControl], T]
    on_gpu: Callable[[], T] | None = None
    words: Words = SONG_WORDS
    keep_on_disconnect: bool = False  # see ``ActiveRuns.start``
    # Registered with ActiveRuns so that Cancel reaches it; False for work beside a run (a LoRA
    # file checked on its own slot), which must not take the session's Cancel from its song.
    cancellable: bool = True
    lane: str = SONG_LANE  # a session runs one job per lane: a song, and lyrics beside it


@contextmanager
def run_guard(runs: ActiveRuns, session: str, control: RunControl, job: Job) -> Iterator[None]:
    """The one guard around model work: the session's cancellable run while it lasts, and the
    engine's plain exceptions as ``gr.Error`` messages (escaped and bounded by ``safe_message``).
    A cancel ends the block quietly unless ``job.words`` says something."""
    words = job.words
    if job.cancellable:
        runs.start(session, control, job.keep_on_disconnect, job.lane)
    try:
        yield
    except Cancelled:
        if words.cancelled:
            raise gr.Error(words.cancelled) from None
        if words.stopped:
            gr.Info(words.stopped)
    except ModelUnavailableError as error:
        raise gr.Error(safe_message(str(error)), title=words.unavailable, duration=None) from error
    except (ValueError, *words.refused) as error:
        raise gr.Error(safe_message(str(error)), title=words.failed) from error
    except OSError as error:
        raise gr.Error(safe_message(f"{words.disk}: {error}"), title="Disk problem") from error
    except GpuAborted as error:
        raise gr.Error(safe_message(str(error)), title="GPU time ran out", duration=None) from error
    except RuntimeError as error:  # the model itself failed, e.g. out of GPU memory
        log.exception("%s", words.crashed)
        raise gr.Error(safe_message(f"{words.crashed}: {error}"), title="Model error") from error
    finally:
        if job.cancellable:
            runs.finish(session, control, job.lane)


def _start(job: Job[T], control: RunControl) -> T:
    # ZeroGPU runs the work in a forked worker, so Cancel there is Gradio's own.
    return job.on_gpu() if job.on_gpu is not None and on_zerogpu() else job.work(control)


def guarded_run(runs: ActiveRuns, session: str, progress: Callable[[float, str], None] | None, job: Job[T]) -> T | None:
    """Run ``job`` as this session's run through the guard; ``None`` when it was cancelled
    quietly. A saved run is recorded as this session's; nothing is saved on any failure."""
    control = RunControl(progress)
    with run_guard(runs, session, control, job):
        result = _start(job, control)
        if isinstance(result, Run) and runs.owners is not None:
            runs.owners.record(session, result.run_id)
        return result
    return None


def guarded_stream(
    runs: ActiveRuns, session: str, progress: Callable[[float, str], None] | None, job: Job[Iterable[T]]
) -> Iterator[T]:
    """``guarded_run`` for work that streams (each item passed on as it comes)."""
    control = RunControl(progress)
    with run_guard(runs, session, control, job):
        yield from _start(job, control)


class Canceller:
    """The Cancel and Stop buttons: they reach the run of the session that clicked."""

    def __init__(self, runs: ActiveRuns, lane: str | None = None) -> None:
        self.runs = runs
        self.lane = lane  # None: the session's song, or else whatever it runs

    def cancel_handler(self, request: gr.Request = None) -> str:
        if self.runs.cancel(session_key(request), self.lane):
            return "Cancelling…"
        return "Nothing is running."


def api_handler(studio: Studio, runs: ActiveRuns, mode: str) -> Callable[..., tuple[list[str], dict]]:
    fields = set(REQUEST_TYPES[mode].field_names())

    # The optional inputs are spelled out with a None default so that API clients may
    # omit them (Gradio makes a parameter optional only then, or when the component
    # has a value).
    def handler(
        bpm: int | None = None,
        reference_audio: str | None = None,
        audio_duration: float | None = None,
        cover_image: str | None = None,
        n_max: int | None = None,
        repainting_end: float | None = None,
        progress: gr.Progress = gr.Progress(track_tqdm=True),
        request: gr.Request = None,
        **values: Any,
    ) -> tuple[list[str], dict]:
        optional = {
            "bpm": bpm,
            "reference_audio": reference_audio,
            "audio_duration": audio_duration,
            "cover_image": cover_image,
            "n_max": n_max,
            "repainting_end": repainting_end,
        }
        values.update({name: value for name, value in optional.items() if name in fields})
        run = run_generate(studio, runs, values, session_key(request), ProgressRelay(progress), SongRun(mode))
        if run is None:
            raise gr.Error("Cancelled: nothing was saved.")
        return run_files(run), run.settings

    handler.__name__ = f"{mode}_api"
    handler.__doc__ = api_doc(mode)  # what MCP clients and the API page show
    return handler


API_SUMMARIES = {
    "generate": "Make a song from a style prompt and lyrics with ACE-Step 1.5.",
    "cover": "Re-make an uploaded song in a new style, optionally with new lyrics and a timbre reference.",
    "extend": "Continue an uploaded song after its end or before its start with new music and lyrics.",
    "edit": "Re-make one time segment of an uploaded song and leave the rest untouched.",
    "flow_edit": "Change an uploaded song's words or style and keep its music (FlowEdit): describe the song "
    "as it is (source_prompt, source_lyrics) and as it should be (prompt, lyrics), optionally for one segment.",
}


def add_api_endpoints(studio: Studio, runs: ActiveRuns, page: Page) -> None:
    """The named API endpoints, one per song mode plus ``vary``; call inside the page's Blocks.
    Keyword parameters carry the request's field names; each returns the run's files and settings."""
    panels, advanced = page.songs.panels, page.shared.advanced
    api_files = gr.File(file_count="multiple", visible=False)
    api_settings = gr.JSON(visible=False)
    with gr.Column(visible=False):
        # FlowEdit's endpoint takes its own defaults (the whole song, the paper's guidance).
        flow_inputs = build_panel("main", "edit", studio.defaults(FlowEditRequest))
        flow_inputs |= build_panel("flow", "flow_edit", studio.defaults(FlowEditRequest))
    for mode, panel in [*panels.items(), ("flow_edit", flow_inputs)]:
        gr.Button(visible=False).click(
            api_handler(studio, runs, mode),
            inputs_kwargs={**panel, **advanced},
            outputs=[api_files, api_settings],
            api_name=mode,
            **RUN_OPTIONS,
        )

    def vary_api(
        parent_run_id: str,
        variance: float = DEFAULT_VARIANCE,
        seed: int | None = None,
        progress: gr.Progress = gr.Progress(track_tqdm=True),
        request: gr.Request = None,
    ) -> tuple[list[str], dict]:
        """A new take near a saved run: its starting noise blended with fresh noise.

        Args:
            parent_run_id: The saved run to vary (settings["run_id"] of a generate, cover, extend or edit run).
            variance: 0 gives the same take back, 1 an entirely fresh take; 0.2 keeps the song.
            seed: The fresh noise's seed; empty or -1 for a random one.

        Returns:
            The run's files (WAV, FLAC, MP3 per take, settings.json) and its settings.
        """
        values = {"parent_run_id": parent_run_id, "variance": variance}
        if seed not in (None, RANDOM_SEED):
            values["seed"] = seed
        run = run_vary(studio, runs, values, session_key(request), ProgressRelay(progress))
        if run is None:
            raise gr.Error("Cancelled: nothing was saved.")
        return run_files(run), run.settings

    gr.Button(visible=False).click(
        vary_api,
        inputs_kwargs={
            "parent_run_id": gr.Textbox(visible=False),
            "variance": gr.Number(value=DEFAULT_VARIANCE, visible=False),
            "seed": gr.Number(value=None, visible=False),
        },
        outputs=[api_files, api_settings],
        api_name="vary",
        **RUN_OPTIONS,
    )


def api_doc(mode: str) -> str:
    """A Google-style docstring for one mode's endpoint, from the tooltips."""
    lines = [API_SUMMARIES[mode], "", "Args:"]
    for name in REQUEST_TYPES[mode].field_names():
        help_text = " ".join(str(TOOLTIPS.get(name, name.replace("_", " "))).split())
        lines.append(f"    {name}: {help_text}")
    lines += ["", "Returns:", "    The run's files (WAV, FLAC, MP3 per take, settings.json) and its settings."]
    return "\n".join(lines)
