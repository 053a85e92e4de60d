"""Batch runs on a Ray cluster: one studio per GPU (or per CPU share), the run folders written here.

``python batch.py requests.json --ray auto`` starts a Ray cluster on this machine; ``--ray ADDRESS``
joins one. Each actor builds the studio once from the same options as ``app.py`` and renders
requests; it writes nothing. It hands back what the studio would have saved (``HeldRun``: the
settings, the takes' audio, the seeds, the writers and the input files), and the driver saves that
through the same ``OutputStore.save_run`` the single-process batch uses. So the run folders are the
same (names, files, settings.json), the actors need no shared disk, one process picks every folder
name, and an actor that dies mid-run can leave nothing in the outputs folder: each run appears there
whole (staging folder, then rename) or not at all.

Ray is imported here only, and only when a batch asks for it; the studio and the plain batch never do.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend import RunControl
from batch import BatchItem, plan_batch, split_done
from export import Cover, Writer
from modes import SongRequest
from outputs import OutputStore, Run
from studio import Studio

ROOT = Path(__file__).resolve().parent.parent
MAX_ATTEMPTS = 2  # a failed request is retried once, on another actor when there is one
PROGRESS_EVERY_S = 10.0  # a progress line at least this often while songs render
SAVE_THREADS = 4  # runs encoded and written at once here (the MP3 and FLAC encoders release the GIL)
SAVE_POLL_S = 0.2  # while runs are being saved, how often the loop looks for finished ones
# Every actor's model loaded within this, or the batch stops and says which actors did not start
# (a cluster without the resources they ask for never starts them; a full-size model from a cold
# disk takes minutes).
READY_TIMEOUT_S = 1800.0
# Environment the actors need to find the same models and caches as this process.
PASSED_ENV_PREFIXES = ("ACE_STUDIO_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TORCH_HOME")
# Not shipped to a remote cluster with the code: runs, caches, environments.
UPLOAD_EXCLUDES = [".git", ".venv*", "outputs", "test-artifacts", "**/__pycache__", ".mypy_cache", ".ruff_cache"]


@dataclass
class HeldRun:
    """A finished run as the studio would save it, not yet written anywhere."""

    settings: dict[str, Any]
    audios: list[np.ndarray]
    seeds: list[int]
    copies: dict[str, bytes]  # input files the run keeps: name in the run folder -> contents
    writers: dict[str, Writer] | None
    cover: Cover | None


@dataclass(frozen=True)
class RenderFailure:
    message: str
    bad_input: bool  # a ValueError: the request itself is wrong, and would be on any actor


class HoldingStore(OutputStore):
    """An actor's store: keeps the run it is given in memory for the driver to save."""

    def __init__(self) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="ace-ray-actor-")))  # never written to
        self.held: HeldRun | None = None

    def save_run(
        self,
        settings: dict[str, Any],
        audios: Sequence[np.ndarray],
        seeds: list[int],
        copies: Mapping[str, Path] | None = None,
        writers: Mapping[str, Writer] | None = None,
        cover: Cover | None = None,
    ) -> Run:
        kept = {name: Path(source).read_bytes() for name, source in (copies or {}).items()}
        self.held = HeldRun(dict(settings), list(audios), list(seeds), kept, dict(writers) if writers else None, cover)
        return Run(run_id="", folder=self.root, settings=settings, takes=[])


class Renderer:
    """One studio in one Ray actor: the model loaded once, requests rendered one at a time."""

    def __init__(self, argv: list[str]) -> None:
        from serving.cli import make_studio, parse_args

        self.studio = dataclasses.replace(make_studio(parse_args(argv)), store=HoldingStore())

    def ready(self) -> str:
        """Load the model now, so that a model that cannot load stops the batch before it starts."""
        self.studio.backend.load()
        return f"{os.uname().nodename}:{os.getpid()} {self.studio.backend.device.device}"

    def render(self, request: SongRequest) -> HeldRun | RenderFailure:
        store = self.studio.store
        assert isinstance(store, HoldingStore)
        store.held = None
        try:
            self.studio.generate(request, RunControl())
        except ValueError as error:
            return RenderFailure(str(error), bad_input=True)
        except Exception as error:  # reported for this request; the actor goes on with the next
            return RenderFailure(f"{type(error).__name__}: {error}", bad_input=False)
        held, store.held = store.held, None
        if held is None:
            return RenderFailure("the studio saved no run", bad_input=False)
        return held


def save_held(store: OutputStore, held: HeldRun) -> Run:
    """Save an actor's run here exactly as ``Studio.generate`` saves one (``OutputStore.save_run``)."""
    with tempfile.TemporaryDirectory(prefix="ace-ray-inputs-") as folder:
        copies = {}
        for name, data in held.copies.items():
            copies[name] = Path(folder) / name
            copies[name].write_bytes(data)
        return store.save_run(
            held.settings, held.audios, held.seeds, copies=copies, writers=held.writers, cover=held.cover
        )


@dataclass(frozen=True)
class RayOptions:
    address: str = "auto"  # 'auto': a cluster on this machine; else the address of one
    argv: list[str] = field(default_factory=list)  # the studio's options, as app.py takes them
    actors: int | None = None  # default: one per GPU, else one per CPU
    report: Path | None = None
    ready_timeout_s: float = READY_TIMEOUT_S
    # A song still rendering after this is treated as a stuck actor: it is killed and replaced, and
    # the song retried once. None: no limit (long songs on slow devices take what they take).
    song_timeout_s: float | None = None
    # Called after each round of dispatch with the pool and every outcome (tests: faults, Ctrl-C).
    watch: Callable[[Pool, list[Outcome]], None] | None = None


@dataclass
class Outcome:
    """What became of one request: the JSON report's entry and the summary table's row."""

    number: int
    mode: str
    seed: int
    key: str
    status: str = "queued"  # queued, running, saving, done, skipped, failed, stopped
    run_id: str = ""
    error: str = ""
    attempts: int = 0
    seconds: float = 0.0
    actor: str = ""


@dataclass
class Job:
    item: BatchItem
    outcome: Outcome
    avoid: str = ""  # the actor it failed on: retried elsewhere when another is free


def actor_resources(resources: Mapping[str, float], actors: int | None) -> tuple[int, dict[str, float]]:
    """How many actors and what each reserves: a GPU each when the cluster has GPUs, else an equal
    share of the CPUs (Ray gives an actor as many threads as whole CPUs it reserves)."""
    gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 1))
    if gpus >= 1:
        count = actors or int(gpus)
        return count, {"num_gpus": min(1.0, gpus / count), "num_cpus": min(1.0, cpus / count)}
    count = actors or max(1, int(cpus))
    share = cpus / count
    return count, {"num_cpus": float(int(share)) if share >= 1 else share}


class PoolError(RuntimeError):
    """The pool cannot go on (its actors do not start or keep dying); the message says why."""


class Pool:
    """The actors, each with one studio; a dead one is replaced by a fresh one."""

    def __init__(self, ray: Any, argv: list[str], count: int, options: dict[str, float]) -> None:
        self.ray = ray
        env = {name: value for name, value in os.environ.items() if name.startswith(PASSED_ENV_PREFIXES)}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        self.options = dict(options)
        self._remote = ray.remote(Renderer).options(**options, runtime_env={"env_vars": env}, max_concurrency=1)
        self.argv = argv
        self.actors: dict[str, Any] = {}
        self.idle: list[str] = []
        self.replaced = 0
        self.limit = 2 * count + 2  # more deaths than this: the studio cannot run there at all
        self._serial = 0
        for _ in range(count):
            self._add()

    def _add(self) -> str:
        self._serial += 1
        name = f"actor-{self._serial}"
        self.actors[name] = self._remote.remote(self.argv)
        self.idle.append(name)
        return name

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> list[str]:
        """Every actor's model loaded; raises the first actor's error when one cannot load it, and
        ``PoolError`` when some are not ready within ``timeout_s`` (never waits longer)."""
        pending = {actor.ready.remote(): name for name, actor in self.actors.items()}
        deadline = time.monotonic() + timeout_s
        ready: list[str] = []
        while pending and (left := deadline - time.monotonic()) > 0:
            done, _ = self.ray.wait(list(pending), num_returns=1, timeout=left)
            for ref in done:
                pending.pop(ref)
                ready.append(self.ray.get(ref))
        if pending:
            raise PoolError(
                f"{len(pending)} of {len(self.actors)} Ray actors did not start within {timeout_s:g} s "
                f"({', '.join(sorted(pending.values()))}); each asks for {self.options}, and the cluster "
                f"has {self.ray.available_resources()} free. Is its model reachable from every node?"
            )
        return ready

    def replace(self, name: str, reason: str) -> str:
        self.actors.pop(name, None)
        if name in self.idle:
            self.idle.remove(name)
        self.replaced += 1
        if self.replaced > self.limit:
            raise PoolError(f"actors keep dying ({self.replaced} so far); the last: {reason}")
        return self._add()

    def stop(self) -> None:
        for actor in self.actors.values():
            self.ray.kill(actor)
        self.actors.clear()
        self.idle.clear()


def _connect(ray: Any, address: str) -> bool:
    """Join or start the cluster; True when this call started it (and shuts it down at the end)."""
    if ray.is_initialized():
        return False
    if address == "auto":
        ray.init(include_dashboard=False, log_to_driver=False)
    else:  # another machine: the code travels with the job
        ray.init(
            address=address, log_to_driver=False, runtime_env={"working_dir": str(ROOT), "excludes": UPLOAD_EXCLUDES}
        )
    return True


class Progress:
    """The progress line (completed, failed, running, songs per minute, ETA) on stderr."""

    def __init__(self, outcomes: list[Outcome], stream: Any = None) -> None:
        self.outcomes = outcomes
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self.printed = 0.0

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("done", "skipped", "failed", "running", "queued", "stopped"), 0)
        for outcome in self.outcomes:
            counts["running" if outcome.status == "saving" else outcome.status] += 1
        return counts

    def line(self) -> str:
        counts = self.counts()
        minutes = (time.monotonic() - self.started) / 60
        rate = counts["done"] / minutes if minutes > 0 else 0.0
        left = counts["running"] + counts["queued"]
        eta = _duration(left / rate * 60) if rate > 0 else "?"
        total = len(self.outcomes)
        return (
            f"{counts['done'] + counts['skipped']}/{total} complete, {counts['failed']} failed, "
            f"{counts['running']} running, {rate:.1f} songs/min, ETA {eta}"
        )

    def show(self, force: bool = False) -> None:
        if force or time.monotonic() - self.printed >= PROGRESS_EVERY_S:
            print(self.line(), file=self.stream, flush=True)
            self.printed = time.monotonic()


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _dispatch(queue: deque[Job], pool: Pool, running: dict[Any, tuple[str, Job, float]]) -> None:
    """Give each idle actor the first queued job that did not just fail on it."""
    for name in list(pool.idle):
        job = next((job for job in queue if job.avoid != name or len(pool.actors) == 1), None)
        if job is None:
            continue
        queue.remove(job)
        pool.idle.remove(name)
        job.outcome.status, job.outcome.attempts, job.outcome.actor = "running", job.outcome.attempts + 1, name
        running[pool.actors[name].render.remote(job.item.request)] = (name, job, time.monotonic())


def _finish(job: Job, queue: deque[Job], message: str, retry: bool, actor: str) -> None:
    """A failed attempt: queued again (avoiding that actor) while attempts are left, else reported."""
    if retry and job.outcome.attempts < MAX_ATTEMPTS:
        job.outcome.status, job.avoid = "queued", actor
        queue.append(job)
    else:
        job.outcome.status, job.outcome.error = "failed", message


def _expire(
    ray: Any, pool: Pool, queue: deque[Job], running: dict[Any, tuple[str, Job, float]], limit_s: float
) -> None:
    """Songs still rendering after ``limit_s``: a stuck actor is killed and replaced, its song retried once."""
    now = time.monotonic()
    for ref, (name, job, started) in list(running.items()):
        if now - started > limit_s:
            running.pop(ref)
            job.outcome.seconds = round(job.outcome.seconds + now - started, 3)
            ray.kill(pool.actors[name])
            reason = f"still rendering after {limit_s:g} s (the actor was replaced)"
            pool.replace(name, reason)
            _finish(job, queue, reason, retry=True, actor=name)


def _wait_s(saving: bool, running: dict[Any, tuple[str, Job, float]], limit_s: float | None) -> float:
    """How long the loop may wait for a song: not past the next song's time limit."""
    wait_s = SAVE_POLL_S if saving else PROGRESS_EVERY_S
    if limit_s is not None and running:
        first = min(started for _, _, started in running.values())
        wait_s = min(wait_s, max(SAVE_POLL_S, first + limit_s - time.monotonic()))
    return wait_s


def _save(store: OutputStore, held: HeldRun, outcome: Outcome) -> None:
    """In a saving thread: write the run, then record it. A second try follows a failed one: two
    saves that picked the same free name at once (same prompt, seed and second) collide at the rename."""
    try:
        try:
            run = save_held(store, held)
        except OSError:
            run = save_held(store, held)
        outcome.run_id, outcome.status = run.run_id, "done"
    except Exception as error:
        outcome.status, outcome.error = "failed", f"saving the run: {type(error).__name__}: {error}"


def drive(
    ray: Any,
    pool: Pool,
    jobs: list[Job],
    store: OutputStore,
    progress: Progress,
    watch: Callable[[Pool, list[Outcome]], None] | None = None,
    song_timeout_s: float | None = None,
) -> None:
    """Render every job on the pool, saving each finished run here (encoding in a few threads,
    so that many GPUs do not wait on one core); returns when every song is saved or failed.
    A song still rendering after ``song_timeout_s`` counts as a failed attempt on a stuck actor."""
    from ray.exceptions import RayActorError, RayError

    queue = deque(jobs)
    running: dict[Any, tuple[str, Job, float]] = {}
    saving: set[futures.Future] = set()
    with futures.ThreadPoolExecutor(SAVE_THREADS, thread_name_prefix="ace-ray-save") as savers:
        while queue or running or saving:
            _dispatch(queue, pool, running)
            if watch is not None:
                watch(pool, progress.outcomes)
            wait_s = _wait_s(bool(saving), running, song_timeout_s)
            ready = []
            if running:
                ready, _ = ray.wait(list(running), num_returns=1, timeout=wait_s)
            else:  # only saves left
                futures.wait(saving, timeout=wait_s)
            for ref in ready:
                name, job, started = running.pop(ref)
                job.outcome.seconds = round(job.outcome.seconds + time.monotonic() - started, 3)
                try:
                    result = ray.get(ref)
                except RayActorError as error:  # killed, out of memory, its node lost: a fresh one takes over
                    reason = f"the actor running it died ({type(error).__name__})"
                    pool.replace(name, reason)
                    _finish(job, queue, reason, retry=True, actor=name)
                    continue
                except RayError as error:
                    result = RenderFailure(f"{type(error).__name__}: {error}", bad_input=False)
                pool.idle.append(name)
                _dispatch(queue, pool, running)  # the actor renders the next song while this one is saved
                if isinstance(result, RenderFailure):
                    _finish(job, queue, result.message, retry=not result.bad_input, actor=name)
                    progress.show(force=True)
                else:
                    job.outcome.status = "saving"
                    saving.add(savers.submit(_save, store, result, job.outcome))
            if song_timeout_s is not None:
                _expire(ray, pool, queue, running, song_timeout_s)
            for future in [future for future in saving if future.done()]:
                saving.discard(future)
                progress.show(force=True)
            progress.show()


def summary_table(outcomes: list[Outcome]) -> str:
    """One row per request: number, mode, outcome, attempts, seconds, and its run folder or reason."""
    rows = [("#", "mode", "outcome", "tries", "seconds", "run folder / reason")]
    for o in outcomes:
        rows.append((str(o.number), o.mode, o.status, str(o.attempts), f"{o.seconds:.1f}", o.run_id or o.error))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:5], widths, strict=True)) + "  " + row[5]
        for row in rows
    )


def write_report(path: Path, store: OutputStore, outcomes: list[Outcome], progress: Progress) -> None:
    """The JSON report, written whole (a temporary file renamed into place)."""
    report = {
        "outputs": str(store.root),
        "totals": progress.counts(),
        "seconds": round(time.monotonic() - progress.started, 3),
        "requests": [dataclasses.asdict(outcome) for outcome in outcomes],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial")
    staging.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(staging, path)


def run_on_ray(studio: Studio, requests: list[SongRequest], options: RayOptions, stream: Any = None) -> int:
    """Render a batch on Ray and save it through ``studio.store``; the exit status (0 all done,
    1 some failed, 2 the pool could not start, 130 stopped by Ctrl-C: a rerun resumes)."""
    import ray

    todo, done = split_done(plan_batch(requests, studio.backend.normalise), studio.store)
    outcomes = [Outcome(item.number, item.request.mode, item.request.seed, item.key) for item in todo]
    outcomes += [Outcome(item.number, item.request.mode, item.request.seed, item.key, "skipped") for item in done]
    outcomes.sort(key=lambda outcome: outcome.number)
    by_number = {outcome.number: outcome for outcome in outcomes}
    jobs = [Job(item, by_number[item.number]) for item in todo]
    progress = Progress(outcomes, stream)
    status, started_here, pool = 0, False, None
    try:
        if jobs:
            started_here = _connect(ray, options.address)
            count, resources = actor_resources(ray.cluster_resources(), options.actors)
            pool = Pool(ray, options.argv, min(count, len(jobs)), resources)
            actors = pool.wait_ready(options.ready_timeout_s)
            print(f"{len(jobs)} to render, {len(done)} already saved; actors: {actors}", file=progress.stream)
            progress.started = time.monotonic()
            drive(ray, pool, jobs, studio.store, progress, options.watch, options.song_timeout_s)
        status = 1 if any(outcome.status == "failed" for outcome in outcomes) else 0
    except KeyboardInterrupt:
        status = 130
    except PoolError as error:  # the actors do not start or keep dying: said in words
        print(f"error: {error}", file=sys.stderr)
        status = 2
    except Exception as error:  # the cluster or a model that cannot load: its own words, with its kind
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        status = 2
    finally:
        for outcome in outcomes:
            if outcome.status in ("queued", "running", "saving"):
                outcome.status = "stopped"
        if pool is not None:
            pool.stop()
        if started_here:
            ray.shutdown()
    print(summary_table(outcomes))
    print(progress.line(), file=progress.stream)
    if status == 130:
        print("stopped; run the same command again to render the rest", file=progress.stream)
    if options.report is not None:
        write_report(options.report, studio.store, outcomes, progress)
    return status
