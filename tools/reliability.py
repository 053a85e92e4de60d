"""Reliability figures: many clients at once, and a long run of generations.

    python -m tools.reliability load --clients 20            # a real server on the tiny model
    python -m tools.reliability load --clients 40 --queue 8  # past the queue limit: "busy" answers
    python -m tools.reliability soak --runs 200              # memory growth over many runs

``load`` starts the studio on the tiny model (or uses ``--url``), fires the clients at
``/generate`` at once with distinct prompts and seeds, and checks that every accepted
request came back with its own settings (no cross-talk) and that refusals say the studio
is busy. ``soak`` runs the engine many times in one process and prints resident memory
at the start, after warm-up and at the end. Both print their figures and return them,
so the tests assert on the same numbers.
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


@dataclass
class SoakReport:
    runs: int
    loaded_mb: float  # resident memory with the model loaded, before the first run
    samples_mb: list[float]  # resident memory after every ``SAMPLE_EVERY`` runs
    seconds: float

    @property
    def growth_mb(self) -> float:
        """Mean of the last third of the samples minus mean of the first third: the trend,
        not the allocator's run-to-run swing (which is about 200 MB on the tiny model)."""
        third = max(1, len(self.samples_mb) // 3)
        return statistics.fmean(self.samples_mb[-third:]) - statistics.fmean(self.samples_mb[:third])

    @property
    def peak_mb(self) -> float:
        return max(self.samples_mb, default=self.loaded_mb)

    def summary(self) -> str:
        return (
            f"{self.runs} runs in {self.seconds:.0f} s ({self.runs / self.seconds:.1f} runs/s): resident "
            f"{self.loaded_mb:.0f} MB loaded, peak {self.peak_mb:.0f} MB, trend {self.growth_mb:+.1f} MB "
            f"(first vs last third of {len(self.samples_mb)} samples)"
        )


SAMPLE_EVERY = 10  # runs between memory samples


def run_soak(studio, runs: int, duration_s: float = 10.0) -> SoakReport:
    """``runs`` generations in a row on ``studio``; each run folder is deleted once written,
    so disk space is not what is measured."""
    import shutil

    from backend import RunControl
    from modes import GenerateRequest

    studio.backend.load()
    gc.collect()
    loaded = resident_mb()
    samples = []
    began = time.perf_counter()
    for index in range(runs):
        request = GenerateRequest(prompt=f"soak {index}", seed=index, audio_duration=duration_s)
        run = studio.generate(request, RunControl())
        shutil.rmtree(studio.store.root / run.run_id)
        if (index + 1) % SAMPLE_EVERY == 0:
            gc.collect()
            samples.append(resident_mb())
    return SoakReport(runs, loaded, samples, time.perf_counter() - began)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    load = sub.add_parser("load", help="concurrent clients against /generate")
    load.add_argument("--clients", type=int, default=20)
    load.add_argument("--queue", type=int, default=None, help="queue size of the tiny server (default: the studio's)")
    load.add_argument("--url", default=None, help="an already running studio instead of a tiny one")
    soak = sub.add_parser("soak", help="many generations in a row, memory printed")
    soak.add_argument("--runs", type=int, default=200)
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
        else:
            from backend import Backend, DeviceInfo
            from checkpoints import resolve_model
            from outputs import OutputStore
            from studio import Studio

            backend = Backend(resolve_model("tiny"), device=DeviceInfo("cpu", "float32"))
            studio = Studio(backend=backend, store=OutputStore(Path(scratch) / "outputs"))
            report = run_soak(studio, args.runs)
            print(report.summary())
            figures = asdict(report) | {"growth_mb": report.growth_mb, "peak_mb": report.peak_mb}
            ok = True
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
