"""One GPU check, full-size random weights, nothing downloaded (``tools/gpu_check.sh`` runs it).

    python -m tools.gpu_check            # on a GPU: the figures docs/PERFORMANCE.md asks for
    python -m tools.gpu_check --smoke    # the same code paths, scaled down, on the CPU (a test runs it)

It prints, in one run:

- the planner's tokens per second for a 180 s song (900 codes) at the 1.7B shape with LM
  guidance, one take and four (batched when the planner takes ``takes``, else one after another,
  as the row says);
- for the DiT at the XL shape (hidden 2560, 32 layers, 32 heads; the default checkpoint) and the
  2B shape, turbo (8 steps) and SFT (50 steps, guidance): seconds per denoising step, MFU against
  the GPU's bf16 peak, and VAE decode seconds, for a 180 s song;
- the whole 180 s song (XL turbo), request to files, with and without Think.

The XL DiT's width, depth and heads are the published ones; its MLP width (9,728, Qwen3-4B's
ratio) and 8 KV heads are assumptions until its config is read from the checkpoint. ``--smoke``
swaps every model for the tiny test models and the song for 10 s.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import itertools
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from backend import Backend, RunControl, pick_device, place_pipeline
from checkpoints import resolve_model
from lm.plan import PlannerSettings
from lm.planner import Planner
from modes import GenerateRequest
from outputs import OutputStore
from studio import Studio
from tools.bench import StageTimer, bench_request, device_name
from tools.bench_lm import build_full_size_planner
from tools.full_size import bf16_peak_tflops, build_full_size_pipeline, dit_flops_per_step
from tools.tiny_model import ensure_tiny_planner

SONG_S = 180
SMOKE_SONG_S = 10
# The XL DiT (FACTS.md: hidden 2560, 32 layers, 32 heads; condition encoder 2048 wide, as the 2B's).
XL_DIT = dict(
    hidden_size=2560,
    intermediate_size=9_728,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    encoder_hidden_size=2048,
)
STEPS = {"turbo": 8, "sft": 50}  # the official defaults (checkpoints.SAMPLER_DEFAULTS)
SMOKE_STEPS = 2
SMOKE_TAKES = (1, 2)  # the four-take path, shorter
CAPTION_TOKENS = 32  # a random-weight LM rarely ends its caption by itself


def full_size_loader(shape: str, turbo: bool):
    """A ``Backend`` loader that builds the DiT of ``shape`` ("XL" or "2B") with random weights on the device."""

    def load(spec, device, offload: bool = False, compile_dit: bool = False):
        import torch
        from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel

        dtype = getattr(torch, device.dtype)
        with torch.device(device.device):
            pipe = build_full_size_pipeline(turbo, dtype)
            if shape == "XL":
                previous = torch.get_default_dtype()
                torch.set_default_dtype(dtype)
                try:
                    pipe.transformer = AceStepTransformer1DModel(is_turbo=turbo, **XL_DIT)
                finally:
                    torch.set_default_dtype(previous)
        return place_pipeline(pipe, device, offload, compile_dit)

    return load


def make_backend(shape: str, variant: str, smoke: bool, device: str | None) -> Backend:
    if smoke:
        spec = resolve_model("tiny" if variant == "turbo" else "tiny-base")
        return Backend(spec, device=pick_device("cpu"))
    spec = dataclasses.replace(resolve_model(variant), label=f"{variant} {shape} (random weights)")
    return Backend(spec, device=pick_device(device), loader=full_size_loader(shape, variant == "turbo"))


def song_request(backend: Backend, song_s: int, steps: int) -> GenerateRequest:
    """The benchmark song with the checkpoint's own guidance (SFT: CFG 7; turbo: none)."""
    request = bench_request(song_s, steps)
    return backend.normalise(dataclasses.replace(request, guidance_scale=backend.spec.defaults.guidance_scale))


def check_planner(
    source: str, device: str | None, song_s: int, warm_up: bool = True, batches: tuple[int, ...] = (1, 4)
) -> list[dict[str, Any]]:
    """Tokens per second for ``song_s`` seconds of codes, for each number of takes in ``batches``."""
    planner = Planner(source, backend="transformers", device=device, max_caption_tokens=CAPTION_TOKENS)
    planner.load()
    settings = PlannerSettings(max_caption_tokens=CAPTION_TOKENS)
    batched = "takes" in inspect.signature(planner.plan).parameters
    if warm_up:
        planner.plan("warm-up", "", seed=0, settings=settings, duration=10, bpm=120)
    rows = []
    for takes in batches:
        stats: dict[str, Any] = {}
        started = time.perf_counter()
        if batched or takes == 1:
            extra = {"takes": takes} if batched else {}
            planner.plan("synth-pop", "[verse]\nla", seed=1, settings=settings, stats=stats, duration=song_s, **extra)
        else:
            for take in range(takes):
                planner.plan("synth-pop", "[verse]\nla", seed=1 + take, settings=settings, duration=song_s)
        seconds = time.perf_counter() - started
        codes = song_s * 5 * takes
        rows.append(
            {
                "takes": takes,
                "how": "batched" if batched or takes == 1 else "one after another",
                "codes": codes,
                "seconds": round(seconds, 2),
                "code_tokens_per_second_per_take": round(codes / takes / seconds, 1),
                "tokens_per_second": stats.get("tokens_per_second"),
            }
        )
    return rows


def check_dit(backend: Backend, song_s: int, steps: int, warm_up: bool = True) -> dict[str, Any]:
    """One pipeline call of a ``song_s`` song: the median step, its MFU, the VAE decode."""
    request = backend.normalise(song_request(backend, song_s, steps))
    pipe = backend.load()
    timer = StageTimer(pipe)
    step_ends: list[float] = []

    def on_progress(_fraction: float, message: str) -> None:
        if message.startswith(("Denoising step", "Decoding audio")):  # the last step says "Decoding"
            step_ends.append(time.perf_counter())

    control = RunControl(on_progress)
    if warm_up:  # first-call allocations and kernel choices
        backend.generate(request.pipeline_kwargs(), request.take_seeds(), RunControl())
    timer.reset()
    backend.generate(request.pipeline_kwargs(), request.take_seeds(), control)
    gaps = [b - a for a, b in itertools.pairwise(step_ends)]
    step_s = statistics.median(gaps) if gaps else float("nan")
    passes = 2 if request.guidance_scale > 1.0 else 1
    flops = dit_flops_per_step(pipe, math.ceil(song_s * 25), 1, passes)
    peak = bf16_peak_tflops(device_name(backend.device.device))
    return {
        "steps": steps,
        "guidance": request.guidance_scale,
        "dit_step_s": round(step_s, 4),
        "mfu_percent": round(100 * flops / step_s / (peak * 1e12), 1) if peak else None,
        "vae_decode_s": round(timer.totals.get("VAE decode", 0.0), 3),
    }


def check_song(backend: Backend, planner: Planner, song_s: int, steps: int) -> list[dict[str, Any]]:
    """The whole song, request to files, with Think and without."""
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        studio = Studio(backend=backend, store=OutputStore(Path(folder)), planner=planner)
        for think in (False, True):
            request: GenerateRequest = dataclasses.replace(song_request(backend, song_s, steps), think=think)
            started = time.perf_counter()
            run = studio.generate(request, RunControl())
            rows.append({"think": think, "seconds": round(time.perf_counter() - started, 2), "run": run.run_id})
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="Planner, DiT, VAE and whole-song figures on one GPU.")
    parser.add_argument("--smoke", action="store_true", help="tiny models, a 10 s song, on the CPU")
    parser.add_argument("--device", default=None, help="default: CUDA, MPS or the CPU")
    parser.add_argument("--json", type=Path, default=Path("gpu_check.json"))
    args = parser.parse_args(argv)
    device = "cpu" if args.smoke else args.device
    song_s = SMOKE_SONG_S if args.smoke else SONG_S
    started = time.perf_counter()
    report: dict[str, Any] = {"device": device_name(pick_device(device).device), "song_s": song_s}
    with tempfile.TemporaryDirectory() as folder:
        source = str(ensure_tiny_planner() if args.smoke else build_full_size_planner(Path(folder) / "lm", "1.7B"))
        report["planner"] = check_planner(source, device, song_s, not args.smoke, SMOKE_TAKES if args.smoke else (1, 4))
        print(f"planner 1.7B{' (tiny)' if args.smoke else ''}, {song_s * 5} codes, CFG:", report["planner"])
        report["dit"] = []
        for shape in ("XL", "2B"):
            for variant, steps in STEPS.items():
                backend = make_backend(shape, variant, args.smoke, device)
                row = {
                    "shape": shape,
                    "variant": variant,
                    **check_dit(backend, song_s, SMOKE_STEPS if args.smoke else steps),
                }
                report["dit"].append(row)
                print("dit", row)
                if shape == "XL" and variant == "turbo":
                    song_backend = backend  # kept for the whole song; the others go as the next is built
        planner = Planner(source, backend="transformers", device=device, max_caption_tokens=CAPTION_TOKENS)
        steps = SMOKE_STEPS if args.smoke else STEPS["turbo"]
        report["song"] = check_song(song_backend, planner, song_s, steps)
        print("whole song, XL turbo:", report["song"])
    report["seconds"] = round(time.perf_counter() - started, 1)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"gpu_check took {report['seconds']} s on {report['device']}; wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
