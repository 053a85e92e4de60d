"""Benchmark: mastering and export speed as a multiple of real time.

    python -m tools.bench_finishing [--seconds 240]

Prints figures for a synthetic stereo track at 48 kHz; run it pinned to one core
(``taskset -c 0``) to compare with the one-core target.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from export import WRITERS, Tags
from post_process import SAMPLE_RATE, master


def synthetic_song(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    chord = sum(np.sin(2 * np.pi * f * t) for f in (110.0, 220.0, 277.2, 329.6)) / 4
    noise = rng.standard_normal(n) * np.exp(-(np.arange(n) % (SAMPLE_RATE // 2)) / (SAMPLE_RATE / 30))
    mono = 0.2 * chord + 0.3 * noise
    return np.stack([mono, 0.95 * mono]).astype(np.float32)


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=240.0)
    args = parser.parse_args()
    audio = synthetic_song(args.seconds)
    result = None

    def run_master() -> None:
        nonlocal result
        result = master(audio, SAMPLE_RATE)

    rows = [("master (-14 LUFS, -1 dBTP)", timed(run_master))]
    tags = Tags(title="bench", lyrics="", seed=0, settings_json="{}")
    with tempfile.TemporaryDirectory() as folder:
        for fmt, writer in WRITERS.items():
            path = Path(folder) / f"bench.{fmt}"
            rows.append((f"export {fmt}", timed(lambda w=writer, p=path: w(p, result.audio, tags))))
    print(f"track: {args.seconds:g} s stereo at {SAMPLE_RATE} Hz")
    print(
        f"loudness {result.before.lufs:.1f} -> {result.after.lufs:.2f} LUFS, "
        f"true peak {result.before.true_peak_dbtp:.2f} -> {result.after.true_peak_dbtp:.2f} dBTP"
    )
    print(f"{'stage':<30} {'seconds':>8} {'x real time':>12}")
    for name, seconds in rows:
        print(f"{name:<30} {seconds:8.2f} {args.seconds / seconds:12.1f}")


if __name__ == "__main__":
    main()
