"""Reliability figures: many clients at once, and a long run of generations.

    python -m tools.reliability load --clients 20            # a real server on the tiny model
    python -m tools.reliability load --clients 40 --queue 8  # past the queue limit: "busy" answers
    python -m tools.reliability soak --runs 200              # memory growth over many Generate runs
    python -m tools.reliability soak --runs 12 --seconds 10 --mode generate cover extend edit flow_edit vary

``load`` starts the studio on the tiny model (or uses ``--url``), fires the clients at
``/generate`` at once with distinct prompts and seeds, and checks that every accepted
request came back with its own settings (no cross-talk) and that refusals say the studio
is busy. ``soak`` runs the engine many times in one process per mode and prints resident
memory with the model loaded, after the first run and after the last, and the kernel's
peak over the runs. Both print their figures and return them, so the tests assert on the
same numbers.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import socket
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

BUSY_WORDS = ("queue is full", "busy", "too many")


@dataclass
class LoadReport:
    clients: int
    completed: int = 0
    busy: int = 0
    crossed: int = 0  # results whose settings are another request's
    failed: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def throughput(self) -> float:
        return self.completed / self.wall_s if self.wall_s else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_s:
            return 0.0
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    def summary(self) -> str:
        return (
            f"{self.clients} clients: {self.completed} completed, {self.busy} refused as busy, "
            f"{len(self.failed)} failed, {self.crossed} crossed; {self.throughput:.2f} songs/s, "
            f"latency p50 {self.percentile(0.5):.1f} s, p99 {self.percentile(0.99):.1f} s, wall {self.wall_s:.1f} s"
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_load(url: str, clients: int, duration_s: float = 10.0) -> LoadReport:
    """``clients`` concurrent ``gradio_client`` callers of ``/generate``, one request each."""
    from gradio_client import Client

    report = LoadReport(clients=clients)
    lock = threading.Lock()
    start_line = threading.Barrier(clients)

    def one(index: int) -> None:
        prompt, seed = f"load test client {index}", 10_000 + index
        client = Client(url, verbose=False)
        try:
            start_line.wait()
            started = time.perf_counter()
            try:
                _, settings = client.predict(prompt=prompt, seed=seed, audio_duration=duration_s, api_name="/generate")
            except Exception as error:
                text = str(error)
                with lock:
                    if any(word in text.lower() for word in BUSY_WORDS):
                        report.busy += 1
                    else:
                        report.failed.append(f"client {index}: {text[:200]}")
                return
            elapsed = time.perf_counter() - started
            request = settings["request"]
            with lock:
                report.completed += 1
                report.latencies_s.append(elapsed)
                if request["prompt"] != prompt or request["seed"] != seed:
                    report.crossed += 1
        finally:
            client.close()

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(clients)))
    report.wall_s = time.perf_counter() - began
    return report


def serve_tiny(outputs: Path, queue_size: int | None = None):
    """The studio on the tiny model in this process; returns ``(url, demo)``."""
    import app
    from backend import Backend, DeviceInfo
    from checkpoints import resolve_model
    from outputs import OutputStore
    from studio import Studio

    backend = Backend(resolve_model("tiny"), device=DeviceInfo("cpu", "float32"))
    backend.load()
    studio = Studio(backend=backend, store=OutputStore(outputs))
    port = _free_port()
    demo = app.launch(
        studio, "127.0.0.1", port, preload=False, prevent_thread_lock=True, quiet=True, queue_max_size=queue_size
    )
    return f"http://127.0.0.1:{port}/", demo


def resident_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak() -> bool:
    """Start a new peak-RSS window (Linux: ``5`` into ``clear_refs`` resets VmHWM); False where unsupported."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_mb() -> float:
    """The kernel's own high-water mark of resident memory (VmHWM) since ``reset_peak``, in MB:
    exact, unlike sampling, which misses a VAE tile's short-lived buffers."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB, since the process began


SOAK_MODES = ("generate", "cover", "extend", "edit", "flow_edit", "vary")
SOAK_SAMPLES = 10  # memory samples per soak, spread evenly over its runs
EXTEND_S = 5.0  # what each Extend run adds (the shortest extension)


@dataclass
class SoakReport:
    runs: int
    loaded_mb: float  # resident memory with the model loaded, before the first run
    samples_mb: list[float]  # resident memory at ``SOAK_SAMPLES`` points spread over the runs
    seconds: float
    mode: str = "generate"
    duration_s: float = 10.0  # the song (or source) length of every run
    first_mb: float = 0.0  # resident memory after the first run
    peak_mb: float = 0.0  # the high-water mark of resident memory over all the runs
    threads: int = 1  # worker threads the runs rotate over, as a server's do

    @property
    def growth_mb(self) -> float:
        """Mean of the last third of the samples minus mean of the first third: the trend,
        not the run-to-run swing."""
        third = max(1, len(self.samples_mb) // 3)
        return statistics.fmean(self.samples_mb[-third:]) - statistics.fmean(self.samples_mb[:third])

    @property
    def last_mb(self) -> float:
        return self.samples_mb[-1] if self.samples_mb else self.first_mb

    def summary(self) -> str:
        return (
            f"{self.mode}, {self.runs} runs of {self.duration_s:g} s on {self.threads} thread(s) in "
            f"{self.seconds:.0f} s: resident {self.loaded_mb:.0f} MB loaded, {self.first_mb:.0f} MB after the "
            f"first run, {self.last_mb:.0f} MB after {self.runs}, peak {self.peak_mb:.0f} MB, trend "
            f"{self.growth_mb:+.1f} MB (first vs last third of {len(self.samples_mb)} samples)"
        )


def write_source(path: Path, duration_s: float) -> Path:
    """A synthetic stereo song at 48 kHz (chords and a little noise) for the modes that take a source."""
    import numpy as np
    import soundfile as sf

    rate = 48_000
    t = np.arange(round(duration_s * rate)) / rate
    tone = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 6
    noise = np.random.default_rng(0).normal(0.0, 0.02, (2, t.size))
    sf.write(path, (tone + noise).T.astype(np.float32), rate, subtype="PCM_16")
    return path


def soak_request(mode: str, index: int, duration_s: float, source: Path | None, parent: str | None):
    """Run ``index`` of a ``mode`` soak: a fresh prompt and seed on the same source each time."""
    from modes import CoverRequest, EditRequest, ExtendRequest, FlowEditRequest, GenerateRequest
    from variations import VaryRequest

    text = {"prompt": f"soak {mode} {index}", "seed": index}
    song = {**text, "src_audio": str(source)}
    quarter = duration_s / 4
    if mode == "generate":
        return GenerateRequest(**text, audio_duration=duration_s)
    if mode == "cover":
        return CoverRequest(**song)
    if mode == "extend":
        return ExtendRequest(**song, extend_seconds=EXTEND_S)
    if mode == "edit":
        return EditRequest(**song, repainting_start=quarter, repainting_end=3 * quarter)
    if mode == "flow_edit":
        return FlowEditRequest(
            **song, source_prompt="soak source", repainting_start=quarter, repainting_end=3 * quarter
        )
    if mode == "vary":
        return VaryRequest(parent_run_id=parent, seed=index, variance=0.5)
    raise ValueError(f"mode: one of {', '.join(SOAK_MODES)}, got {mode!r}")


def run_soak(
    studio, runs: int, duration_s: float = 10.0, mode: str = "generate", threads: int = 1, scratch: Path | None = None
) -> SoakReport:
    """``runs`` runs of ``mode`` in a row on ``studio``, rotating over ``threads`` worker threads
    (a server hands each request to whichever worker is free, and glibc gives each thread its own
    malloc arena). Each run folder is deleted once written, so disk space is not what is measured;
    Vary varies one Generate run kept for the purpose. ``scratch`` holds the source song."""
    import shutil

    from backend import RunControl

    if mode not in SOAK_MODES:
        raise ValueError(f"mode: one of {', '.join(SOAK_MODES)}, got {mode!r}")
    owned = scratch is None
    scratch = Path(tempfile.mkdtemp()) if owned else scratch
    source = write_source(scratch / "soak-source.wav", duration_s)
    workers = [ThreadPoolExecutor(1, thread_name_prefix=f"soak-{i}") for i in range(max(1, threads))]
    parent = None
    try:
        studio.backend.load()
        gc.collect()
        loaded = resident_mb()
        if mode == "vary":
            parent = studio.generate(soak_request("generate", 0, duration_s, None, None), RunControl()).run_id
        reset_peak()
        every = max(1, runs // SOAK_SAMPLES)
        samples, first = [], 0.0
        began = time.perf_counter()
        for index in range(runs):
            request = soak_request(mode, index + 1, duration_s, source, parent)
            call = studio.vary if mode == "vary" else studio.generate
            run = workers[index % len(workers)].submit(call, request, RunControl()).result()
            shutil.rmtree(studio.store.root / run.run_id)
            if index == 0:
                gc.collect()
                first = resident_mb()
            if (index + 1) % every == 0:
                gc.collect()
                samples.append(resident_mb())
        seconds = time.perf_counter() - began
        peak = peak_mb()
    finally:
        for worker in workers:
            worker.shutdown()
        if parent is not None:
            shutil.rmtree(studio.store.root / parent, ignore_errors=True)
        if owned:
            shutil.rmtree(scratch, ignore_errors=True)
    return SoakReport(runs, loaded, samples, seconds, mode, duration_s, first, peak, len(workers))


def _soak_alone(mode: str, args: argparse.Namespace, scratch: Path) -> dict:
    """One mode's soak in a fresh process, so that no mode inherits another's allocator state."""
    import subprocess
    import sys

    figures = scratch / f"soak-{mode}.json"
    command = [sys.executable, "-m", "tools.reliability", "--json", str(figures), "soak", "--mode", mode]
    command += ["--runs", str(args.runs), "--seconds", str(args.seconds), "--threads", str(args.threads)]
    subprocess.run(command, check=True, cwd=Path(__file__).resolve().parent.parent)
    return json.loads(figures.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    load = sub.add_parser("load", help="concurrent clients against /generate")
    load.add_argument("--clients", type=int, default=20)
    load.add_argument("--queue", type=int, default=None, help="queue size of the tiny server (default: the studio's)")
    load.add_argument("--url", default=None, help="an already running studio instead of a tiny one")
    soak = sub.add_parser("soak", help="many runs of one mode in a row, memory printed")
    soak.add_argument("--runs", type=int, default=200)
    soak.add_argument(
        "--mode", choices=SOAK_MODES, nargs="+", default=["generate"], help="one soak per mode, each in its own process"
    )
    soak.add_argument("--seconds", type=float, default=10.0, help="song (and source) length of every run")
    soak.add_argument("--threads", type=int, default=1, help="worker threads the runs rotate over (a server has many)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    with tempfile.TemporaryDirectory() as scratch:
        if args.command == "load":
            demo = None
            url = args.url
            if url is None:
                url, demo = serve_tiny(Path(scratch) / "outputs", args.queue)
            try:
                report = run_load(url, args.clients)
            finally:
                if demo is not None:
                    demo.close()
            print(report.summary())
            for line in report.failed:
                print("  ", line)
            figures = asdict(report) | {"throughput": report.throughput}
            ok = not report.failed and not report.crossed
        elif len(args.mode) > 1:
            figures = {mode: _soak_alone(mode, args, Path(scratch)) for mode in args.mode}
            ok = True
        else:
            from backend import Backend, DeviceInfo
            from checkpoints import resolve_model
            from outputs import OutputStore
            from studio import Studio

            backend = Backend(resolve_model("tiny"), device=DeviceInfo("cpu", "float32"))
            studio = Studio(backend=backend, store=OutputStore(Path(scratch) / "outputs"))
            report = run_soak(studio, args.runs, args.seconds, args.mode[0], args.threads, Path(scratch))
            print(report.summary(), flush=True)
            figures = asdict(report) | {"growth_mb": report.growth_mb}
            ok = True
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
