"""Speed levers, each timed on and off on the same inputs: where the studio's defaults come from.

    python bench_levers.py --model tiny                                    # smoke run
    python bench_levers.py --random-weights full-size --seconds 10 --vae-seconds 30 --repeats 3
    python bench_levers.py --random-weights full-size --seconds 60 --compile   # on a GPU

One pipeline call captures what the DiT receives; each lever then times one DiT forward (one
denoising step) or one VAE decode directly, so a row measures only what the lever touches:

- attention: SDPA's dispatcher (diffusers' "native", the default) against the plain math
  kernel, and on CUDA the flash, memory-efficient and cuDNN kernels;
- guidance: one batch-2 forward (how diffusers runs CFG for SFT/base) against two batch-1 forwards;
- dtype: the device's default against the other of bf16 / fp32;
- VAE decode chunk: tiling off, and decode tiles of 256, 512 (diffusers' default) and 1024
  latent frames, on a ``--vae-seconds`` song;
- CPU offload (CUDA only): a whole pipeline call with and without ``enable_model_cpu_offload``;
- regional ``torch.compile`` (``--compile``): compile time, then the steady-state step.

On CUDA each row also reports the peak GPU memory. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend import Backend, pick_device
from bench import _random_weights, _versions, device_name
from checkpoints import resolve_model
from modes import GenerateRequest

VAE_TILES = (None, 256, 512, 1024)  # latent frames per decode tile; None: tiling off
CUDA_ATTENTION = ("_native_flash", "_native_efficient", "_native_cudnn", "flash")


@dataclasses.dataclass
class Row:
    lever: str
    setting: str
    seconds: float | None
    default: bool = False
    peak_gb: float | None = None
    note: str = ""


class Timer:
    def __init__(self, device: str, repeats: int) -> None:
        self.device = device
        self.repeats = repeats

    def _sync(self) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()

    def __call__(self, lever: str, setting: str, work: Callable[[], Any], default: bool = False) -> Row:
        """Median seconds of ``work()`` after one warm-up call; a failure becomes the row's note."""
        import torch

        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        try:
            with torch.inference_mode():
                work()  # warm-up: allocations, kernel selection, autotuning
                times = []
                for _ in range(self.repeats):
                    self._sync()
                    started = time.perf_counter()
                    work()
                    self._sync()
                    times.append(time.perf_counter() - started)
        except Exception as error:  # a kernel this device or build lacks is a result, not a crash
            return Row(lever, setting, None, default, note=f"unavailable: {str(error).splitlines()[0][:120]}")
        peak = torch.cuda.max_memory_allocated() / 2**30 if self.device == "cuda" else None
        return Row(lever, setting, round(statistics.median(times), 4), default, peak and round(peak, 2))


def capture_dit_inputs(pipe, request: GenerateRequest) -> dict[str, Any]:
    """The keyword arguments of the DiT's first forward in a real pipeline call."""
    import torch

    captured: dict[str, Any] = {}

    def hook(module, args, kwargs):
        captured.setdefault("kwargs", dict(kwargs))

    handle = pipe.transformer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        kwargs = {**request.pipeline_kwargs(), "num_inference_steps": 1}
        pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(0), output_type="pt")
    finally:
        handle.remove()
    return captured["kwargs"]


def _batched(kwargs: dict[str, Any], copies: int) -> dict[str, Any]:
    import torch

    return {k: torch.cat([v] * copies) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}


def _cast(kwargs: dict[str, Any], dtype) -> dict[str, Any]:
    import torch

    return {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in kwargs.items()}


def attention_rows(pipe, inputs: dict, timer: Timer) -> list[Row]:
    dit = pipe.transformer
    rows = [timer("attention", "native SDPA (default)", lambda: dit(**inputs), default=True)]
    candidates = ("_native_math",) + (CUDA_ATTENTION if timer.device == "cuda" else ())
    for backend in candidates:
        try:
            dit.set_attention_backend(backend)
        except Exception as error:
            rows.append(Row("attention", backend, None, note=f"unavailable: {str(error).splitlines()[0][:120]}"))
            continue
        rows.append(timer("attention", backend, lambda: dit(**inputs)))
    dit.reset_attention_backend()
    return rows


def guidance_rows(pipe, inputs: dict, timer: Timer) -> list[Row]:
    dit, pair = pipe.transformer, _batched(inputs, 2)
    return [
        timer("guidance (SFT/base)", "one batch-2 forward (diffusers)", lambda: dit(**pair), default=True),
        timer("guidance (SFT/base)", "two batch-1 forwards", lambda: (dit(**inputs), dit(**inputs))),
    ]


def dtype_rows(pipe, inputs: dict, timer: Timer) -> list[Row]:
    import torch

    dit = pipe.transformer
    default = dit.dtype
    other = torch.float32 if default == torch.bfloat16 else torch.bfloat16
    rows = [timer("dtype (DiT)", f"{str(default).removeprefix('torch.')} (default)", lambda: dit(**inputs), True)]
    dit.to(other)
    cast = _cast(inputs, other)
    rows.append(timer("dtype (DiT)", str(other).removeprefix("torch."), lambda: dit(**cast)))
    dit.to(default)  # a round trip through bf16 rounds the weights: fine for timing, not for listening
    return rows


def vae_rows(pipe, seconds: float, timer: Timer) -> list[Row]:
    import torch

    vae = pipe.vae
    frames = round(seconds * 25)  # 25 latent frames per second of audio
    latents = torch.randn(1, vae.config.decoder_input_channels, frames, device=pipe.device, dtype=vae.dtype)
    saved = (vae.use_tiling, vae.tile_latent_min_length)
    rows = []
    for tile in VAE_TILES:
        vae.use_tiling = tile is not None
        vae.tile_latent_min_length = tile or saved[1]
        label = "tiling off" if tile is None else f"tiles of {tile} frames" + (" (default)" if tile == saved[1] else "")
        rows.append(timer(f"VAE decode, {seconds:g} s song", label, lambda: vae.decode(latents), tile == saved[1]))
    vae.use_tiling, vae.tile_latent_min_length = saved
    return rows


def offload_rows(pipe, request: GenerateRequest, timer: Timer) -> list[Row]:
    import torch

    if timer.device != "cuda":
        return [Row("CPU offload", "on", None, note="needs an accelerator: the pipeline already lives in RAM")]
    kwargs = request.pipeline_kwargs()

    def call():
        pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(0), output_type="pt")

    rows = [timer("CPU offload (whole call)", "off (default)", call, default=True)]
    pipe.enable_model_cpu_offload(device="cuda")
    rows.append(timer("CPU offload (whole call)", "on (--offload)", call))
    pipe.remove_all_hooks()
    pipe.to("cuda")
    return rows


def compile_rows(pipe, inputs: dict, timer: Timer) -> list[Row]:
    import torch

    dit = pipe.transformer
    rows = [timer("regional torch.compile", "off (default)", lambda: dit(**inputs), default=True)]
    for block in dit.layers:
        block.compile()
    started = time.perf_counter()
    try:
        with torch.inference_mode():
            dit(**inputs)
    except Exception as error:
        return [*rows, Row("regional torch.compile", "on", None, note=f"failed: {str(error).splitlines()[0][:120]}")]
    compile_s = time.perf_counter() - started
    row = timer("regional torch.compile", "on (--compile)", lambda: dit(**inputs))
    return [*rows, dataclasses.replace(row, note=f"first call, compiling: {compile_s:.1f} s")]


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description="Each speed lever on and off, on the same inputs.")
    parser.add_argument("--model", default="tiny", help="registry name, Hub id, local folder, tiny or tiny-base")
    parser.add_argument("--random-weights", choices=("full-size",), default=None)
    parser.add_argument("--variant", choices=("turbo", "sft", "base"), default="turbo", help="with --random-weights")
    parser.add_argument("--seconds", type=float, default=10.0, help="song length the DiT levers run on")
    parser.add_argument("--vae-seconds", type=float, default=30.0, help="song length the VAE levers decode")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per row (after one warm-up); medians")
    parser.add_argument("--compile", action="store_true", help="also time regional torch.compile (slow to compile)")
    parser.add_argument("--device", choices=("cuda", "mps", "cpu"), default=None)
    parser.add_argument("--json", type=Path, default=Path("bench_levers.json"))
    args = parser.parse_args(argv)

    spec = resolve_model(args.variant if args.random_weights else args.model)
    loader = None
    if args.random_weights:
        spec = dataclasses.replace(spec, label=f"{args.variant} 2B (random weights)")
        loader = functools.partial(_random_weights, turbo=args.variant == "turbo")
    device = pick_device(args.device)
    pipe = Backend(spec, device=device, loader=loader).load()
    request = GenerateRequest(
        prompt="upbeat synth-pop, female vocals",
        lyrics="[verse]\nneon lights and midnight trains\n[chorus]\nwe are the sound",
        audio_duration=args.seconds,
        num_inference_steps=spec.defaults.num_inference_steps,
        seed=1234,
    ).validate()
    inputs = capture_dit_inputs(pipe, request)
    timer = Timer(device.device, args.repeats)
    rows = attention_rows(pipe, inputs, timer) + guidance_rows(pipe, inputs, timer) + dtype_rows(pipe, inputs, timer)
    rows += vae_rows(pipe, args.vae_seconds, timer) + offload_rows(pipe, request, timer)
    if args.compile:
        rows += compile_rows(pipe, inputs, timer)

    print(
        f"model {spec.label} on {device_name(device.device)} ({device.dtype}); "
        f"DiT rows: one step, {args.seconds:g} s song"
    )
    print(f"{'lever':<28} {'setting':<34} {'seconds':>9} {'vs default':>10} {'peak GB':>8}  note")
    defaults = {row.lever: row.seconds for row in rows if row.default}
    for row in rows:
        base = defaults.get(row.lever)
        ratio = f"{row.seconds / base:.2f}x" if row.seconds and base else "-"
        seconds = f"{row.seconds:.4f}" if row.seconds is not None else "-"
        print(f"{row.lever:<28} {row.setting:<34} {seconds:>9} {ratio:>10} {row.peak_gb or '-'!s:>8}  {row.note}")
    summary = {"model": spec.label, "device": device.device, "device_name": device_name(device.device)}
    summary |= {"dtype": device.dtype, "seconds": args.seconds, "vae_seconds": args.vae_seconds}
    summary |= {"versions": _versions(), "rows": [dataclasses.asdict(row) for row in rows]}
    args.json.write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
