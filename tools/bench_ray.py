"""Benchmark: songs per minute of a batch on Ray, with 1 and 2 actors (or the counts given).

    python -m tools.bench_ray --model tiny --songs 8 [--actors 1 2] [--seconds 10] [--steps 2]

Starts a local Ray cluster with as many CPUs as the most actors asked for (GPUs, when this
machine has them, are Ray's to find) and renders the same batch once per actor count, each into
its own fresh outputs folder. The rate counts rendering and saving, not the model loads (each
actor loads once before its first song). On a CPU, the actors share the same cores, so the ratio
shows what the pool costs rather than what more hardware gives; on a GPU cluster each actor has
its own card. Other options (``--device``, ``--offload``...) go to the studio as in app.py.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from modes import GenerateRequest, SongRequest


def bench_requests(songs: int, seconds: float, steps: int) -> list[SongRequest]:
    """Distinct songs (a seed each) of one length and step count."""
    return [
        GenerateRequest(
            prompt=f"bench song {n}", audio_duration=seconds, num_inference_steps=steps, seed=1000 + n
        ).validate()
        for n in range(songs)
    ]


def songs_per_minute(model: str, actors: int, songs: int, seconds: float, steps: int, rest: list[str]) -> float:
    """One batch on ``actors`` actors into a fresh outputs folder: songs saved per minute of rendering."""
    from serving.cli import make_studio, parse_args
    from serving.ray_batch import RayOptions, run_on_ray

    with tempfile.TemporaryDirectory(prefix="ace-bench-ray-") as folder:
        argv = ["--model", model, "--planner", "none", "--lyrics-model", "none", *rest]
        studio = make_studio(parse_args([*argv, "--outputs", str(Path(folder) / "outputs")]))
        report = Path(folder) / "report.json"
        options = RayOptions(argv=argv, actors=actors, report=report)
        if run_on_ray(studio, bench_requests(songs, seconds, steps), options) != 0:
            raise SystemExit(f"the batch on {actors} actor(s) did not complete; see the table above")
        data = json.loads(report.read_text())
        return data["totals"]["done"] / data["seconds"] * 60


def main(argv: list[str] | None = None) -> None:
    import ray

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--songs", type=int, default=8)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each song")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps of each song")
    args, rest = parser.parse_known_args(argv)
    if "--device" not in rest and args.model.startswith("tiny"):
        rest = [*rest, "--device", "cpu"]
    cpus = max(args.actors)
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        rates = {n: songs_per_minute(args.model, n, args.songs, args.seconds, args.steps, rest) for n in args.actors}
    finally:
        ray.shutdown()
    print(f"\n{args.songs} songs of {args.seconds:g} s, {args.steps} steps, model {args.model}, {cpus} CPUs for Ray")
    print(f"(this machine: {os.cpu_count()} CPUs)")
    print(f"{'actors':>6} {'songs/min':>10} {'vs 1':>6}")
    base = rates.get(1) or next(iter(rates.values()))
    for n, rate in rates.items():
        print(f"{n:>6} {rate:>10.1f} {rate / base:>5.2f}x")


if __name__ == "__main__":
    main()
