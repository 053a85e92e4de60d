"""Benchmark: where the time goes, stage by stage, and what the studio adds on top.

    python -m tools.bench --model tiny                   # CPU smoke run (what CI runs)
    python -m tools.bench --model ./xl-turbo --durations 30 60 180 600 --batch 1 4
    python -m tools.bench --random-weights full-size --variant sft --durations 60 180   # nothing downloaded

For each song length it times one bare pipeline call (split into text encoding, DiT
steps and VAE decode by timing the pipeline's own components) and one full studio run
(request to files on disk), then prints a table and writes JSON. The studio's overhead
is the ratio of the two, measured in the same process on the same inputs. With a full-size
model the DiT's estimated FLOPs per step give its MFU against the GPU's bf16 peak.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

from backend import Backend, RunControl, pick_device, place_pipeline
from checkpoints import resolve_model
from modes import GenerateRequest
from outputs import OutputStore
from studio import Studio
from tools.full_size import bf16_peak_tflops, dit_flops_per_step, parameter_counts

TINY_DURATIONS_S = (30, 60)  # keeps the CI smoke run well under a minute
FULL_DURATIONS_S = (30, 60, 180, 600)


class StageTimer:
    """Times the pipeline's components by wrapping them on this one instance."""

    def __init__(self, pipe) -> None:
        self.totals: dict[str, float] = {}
        self.step_times: list[float] = []
        self._wrap(pipe, "encode_prompt", "text encoding")
        self._wrap(pipe.vae, "decode", "VAE decode")

    def _wrap(self, owner, name: str, stage: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.totals[stage] = self.totals.get(stage, 0.0) + time.perf_counter() - started

        setattr(owner, name, timed)

    def reset(self) -> None:
        self.totals.clear()
        self.step_times.clear()


def bench_request(duration: float, steps: int, batch: int = 1) -> GenerateRequest:
    """The song every benchmark renders: a fixed prompt, lyrics and seed."""
    return GenerateRequest(
        prompt="upbeat synth-pop, female vocals",
        lyrics="[verse]\nneon lights and midnight trains\n[chorus]\nwe are the sound",
        audio_duration=duration,
        num_inference_steps=steps,
        seed=1234,
        batch_size=batch,
    ).validate()


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that pick what a benchmark runs on: a checkpoint, or full-size random weights."""
    parser.add_argument("--model", default="tiny", help="registry name, Hub id, local folder, tiny or tiny-base")
    parser.add_argument("--device", choices=("cuda", "mps", "cpu"), default=None)
    parser.add_argument(
        "--random-weights",
        choices=("full-size",),
        default=None,
        help="build the published 2B architecture with random weights instead of loading --model",
    )
    parser.add_argument("--variant", choices=("turbo", "sft", "base"), default="turbo", help="with --random-weights")


def bench_backend(args: argparse.Namespace) -> Backend:
    """The (not yet loaded) backend the options of ``add_model_arguments`` ask for."""
    spec = resolve_model(args.variant if args.random_weights else args.model)
    loader = None
    if args.random_weights:
        spec = dataclasses.replace(spec, label=f"{args.variant} 2B (random weights)")
        loader = functools.partial(_random_weights, turbo=args.variant == "turbo")
    return Backend(spec, device=pick_device(args.device), loader=loader)


def bench_one(studio: Studio, timer: StageTimer, duration: int, batch: int, steps: int, repeats: int = 1) -> dict:
    request = studio.backend.normalise(bench_request(duration, steps, batch))
    last = [time.perf_counter()]

    def on_progress(fraction: float, message: str) -> None:
        now = time.perf_counter()
        if message.startswith(("Denoising step", "Decoding audio")):
            timer.step_times.append(now - last[0])
        last[0] = now

    # Bare pipeline and studio runs alternate, so drift (heat, other load) hits both alike;
    # the medians are compared.
    bare_times, studio_times, write_times = [], [], []
    for _ in range(repeats):
        timer.reset()
        last[0] = started = time.perf_counter()
        studio.backend.generate(request.pipeline_kwargs(), request.take_seeds(), RunControl(on_progress))
        bare_times.append(time.perf_counter() - started)
        stages = dict(timer.totals)
        # The first step also waits for encoding; the median step is the DiT's cost.
        dit_step = statistics.median(timer.step_times[1:] or timer.step_times)
        started = time.perf_counter()
        run = studio.generate(request, RunControl())
        studio_times.append(time.perf_counter() - started)
        timings = run.settings["timings_s"]
        write_times.append(studio_times[-1] - timings["generate"] - timings["master"])
    bare, studio_s = statistics.median(bare_times), statistics.median(studio_times)
    frames = math.ceil(duration * 25)
    passes = 2 if request.guidance_scale > 1.0 else 1
    flops = dit_flops_per_step(studio.backend.load(), frames, batch, passes)
    peak = bf16_peak_tflops(device_name(studio.backend.device.device))
    return {
        "duration_s": duration,
        "batch": batch,
        "steps": steps,
        "text_encoding_s": round(stages.get("text encoding", 0.0), 4),
        "dit_step_s": round(dit_step, 4),
        "vae_decode_s": round(stages.get("VAE decode", 0.0), 4),
        "pipeline_s": round(bare, 4),
        "studio_s": round(studio_s, 4),
        "write_s": round(statistics.median(write_times), 4),
        "real_time_factor": round(duration * batch / studio_s, 2),
        "overhead_ratio": round(studio_s / bare, 3),
        "dit_tflops_per_step": round(flops / 1e12, 3),
        "dit_tflops_per_s": round(flops / dit_step / 1e12, 3),
        "mfu_percent": round(100 * flops / dit_step / (peak * 1e12), 1) if peak else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Stage timings and real-time factor for ACE Music Studio.")
    add_model_arguments(parser)
    parser.add_argument("--durations", type=int, nargs="+", default=None, help="song lengths in seconds")
    parser.add_argument("--batch", type=int, nargs="+", default=[1], help="takes per call")
    parser.add_argument("--steps", type=int, default=None, help="default: the checkpoint's own")
    parser.add_argument("--json", type=Path, default=Path("bench.json"), help="where to write the results")
    parser.add_argument("--repeats", type=int, default=1, help="bare/studio pairs per row; medians are compared")
    args = parser.parse_args(argv)

    backend = bench_backend(args)
    spec, device = backend.spec, backend.device
    durations = args.durations or (TINY_DURATIONS_S if spec.is_tiny else FULL_DURATIONS_S)
    steps = args.steps or spec.defaults.num_inference_steps
    with tempfile.TemporaryDirectory() as folder:
        studio = Studio(backend=backend, store=OutputStore(Path(folder)))
        started = time.perf_counter()
        pipe = studio.backend.load()
        load_s = time.perf_counter() - started
        timer = StageTimer(pipe)
        bench_one(studio, timer, min(durations), 1, steps)  # warm-up: first-call allocations
        rows = [bench_one(studio, timer, d, b, steps, args.repeats) for b in args.batch for d in durations]

    print(f"model {spec.label} ({spec.variant}) on {device.label} {device.dtype}, {os.cpu_count()} CPUs")
    print(f"load {load_s:.1f} s; parameters: {parameter_counts(pipe)}")
    columns = ("duration_s", "batch", "steps", "text_encoding_s", "dit_step_s", "vae_decode_s", "write_s")
    columns += ("pipeline_s", "studio_s", "real_time_factor", "overhead_ratio", "dit_tflops_per_s", "mfu_percent")
    print(" ".join(f"{c:>16}" for c in columns))
    for row in rows:
        print(" ".join(f"{row[c]!s:>16}" for c in columns))
    summary = {"model": spec.label, "device": device.device, "device_name": device_name(device.device)}
    summary |= {"dtype": device.dtype, "versions": library_versions(), "rows": rows}
    args.json.write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.json}")


def _random_weights(spec, device, offload: bool = False, compile_dit: bool = False, turbo: bool = True):
    """``Backend``'s loader for --random-weights: the full-size pipeline, placed like a real one."""
    import torch

    from tools.full_size import build_full_size_pipeline

    return place_pipeline(build_full_size_pipeline(turbo, getattr(torch, device.dtype)), device, offload, compile_dit)


def device_name(device: str) -> str:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return device


def library_versions() -> dict[str, str]:
    import diffusers
    import torch
    import transformers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__}


if __name__ == "__main__":
    main()
