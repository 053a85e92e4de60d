"""Speed levers, each timed on and off on the same inputs: where the studio's defaults come from.

    python -m tools.bench_levers --model tiny                                    # smoke run
    python -m tools.bench_levers --random-weights full-size --seconds 10 --vae-seconds 30 --repeats 3
    python -m tools.bench_levers --random-weights full-size --seconds 60 --compile   # on a GPU

One pipeline call captures what the DiT receives; each lever then times one DiT forward (one
denoising step) or one VAE decode directly, so a row measures only what the lever touches.
A lever's settings are timed in turn, round after round, and their medians compared:

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

from modes import GenerateRequest
from tools.bench import add_model_arguments, bench_backend, bench_request, device_name, library_versions

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


def _nothing() -> None:
    return None


@dataclasses.dataclass
class Variant:
    """One setting of a lever: ``enter()`` switches to it (untimed), ``work()`` is what is timed."""

    setting: str
    work: Callable[[], Any]
    enter: Callable[[], Any] = _nothing
    default: bool = False


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0][:120]


class Timer:
    def __init__(self, device: str, repeats: int) -> None:
        self.device = device
        self.repeats = repeats

    def _sync(self) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()

    def lever(self, lever: str, variants: list[Variant], restore: Callable[[], Any] = _nothing) -> list[Row]:
        """Each variant once to warm up (allocations, kernel choice), then ``repeats`` rounds
        taking the variants in turn, so that drift (heat, other load) hits them alike; medians.
        A setting this device or build lacks becomes a row with its reason."""
        import torch

        times: dict[str, list[float]] = {variant.setting: [] for variant in variants}
        failed: dict[str, str] = {}
        peaks: dict[str, float] = {}
        try:
            with torch.inference_mode():
                for round_ in range(self.repeats + 1):
                    for variant in variants:
                        if variant.setting in failed:
                            continue
                        try:
                            variant.enter()
                            if self.device == "cuda":
                                torch.cuda.reset_peak_memory_stats()
                            self._sync()
                            started = time.perf_counter()
                            variant.work()
                            self._sync()
                        except Exception as error:
                            failed[variant.setting] = f"unavailable: {_first_line(error)}"
                            continue
                        if round_:
                            times[variant.setting].append(time.perf_counter() - started)
                        if self.device == "cuda":
                            peak = torch.cuda.max_memory_allocated() / 2**30
                            peaks[variant.setting] = round(max(peak, peaks.get(variant.setting, 0.0)), 2)
        finally:
            restore()
        return [
            Row(
                lever,
                variant.setting,
                round(statistics.median(times[variant.setting]), 4) if times[variant.setting] else None,
                variant.default,
                peaks.get(variant.setting),
                failed.get(variant.setting, ""),
            )
            for variant in variants
        ]


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
    variants = [Variant("native SDPA (default)", lambda: dit(**inputs), dit.reset_attention_backend, default=True)]
    for backend in ("_native_math",) + (CUDA_ATTENTION if timer.device == "cuda" else ()):
        variants.append(Variant(backend, lambda: dit(**inputs), functools.partial(dit.set_attention_backend, backend)))
    return timer.lever("attention", variants, restore=dit.reset_attention_backend)


def guidance_rows(pipe, inputs: dict, timer: Timer) -> list[Row]:
    dit, pair = pipe.transformer, _batched(inputs, 2)
    return timer.lever(
        "guidance (SFT/base)",
        [
            Variant("one batch-2 forward (diffusers)", lambda: dit(**pair), default=True),
            Variant("two batch-1 forwards", lambda: (dit(**inputs), dit(**inputs))),
        ],
    )


def dtype_rows(pipe, inputs: dict, timer: Timer) -> list[Row]:
    import torch

    dit = pipe.transformer
    default = dit.dtype
    other = torch.float32 if default == torch.bfloat16 else torch.bfloat16
    cast = _cast(inputs, other)
    # A round trip through bf16 rounds the weights: fine for timing, not for listening.
    return timer.lever(
        "dtype (DiT)",
        [
            Variant(
                f"{str(default).removeprefix('torch.')} (default)", lambda: dit(**inputs), lambda: dit.to(default), True
            ),
            Variant(str(other).removeprefix("torch."), lambda: dit(**cast), lambda: dit.to(other)),
        ],
        restore=lambda: dit.to(default),
    )


def vae_rows(pipe, seconds: float, timer: Timer) -> list[Row]:
    import torch

    vae = pipe.vae
    frames = round(seconds * 25)  # 25 latent frames per second of audio
    latents = torch.randn(1, vae.config.decoder_input_channels, frames, device=pipe.device, dtype=vae.dtype)
    saved = (vae.use_tiling, vae.tile_latent_min_length)

    def tiles(tile: int | None) -> None:
        vae.use_tiling = tile is not None
        vae.tile_latent_min_length = tile or saved[1]

    variants = []
    for tile in VAE_TILES:
        if tile is not None and tile >= frames and tile != saved[1]:
            continue  # one tile covers the song: the same work as tiling off
        label = "tiling off" if tile is None else f"tiles of {tile} frames" + (" (default)" if tile == saved[1] else "")
        variants.append(Variant(label, lambda: vae.decode(latents), functools.partial(tiles, tile), tile == saved[1]))

    def restore() -> None:
        vae.use_tiling, vae.tile_latent_min_length = saved

    return timer.lever(f"VAE decode, {seconds:g} s song", variants, restore)


def offload_rows(pipe, request: GenerateRequest, timer: Timer) -> list[Row]:
    import torch

    if timer.device != "cuda":
        return [Row("CPU offload", "on", None, note="needs an accelerator: the pipeline already lives in RAM")]
    kwargs = request.pipeline_kwargs()

    def call() -> None:
        pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(0), output_type="pt")

    def on_gpu() -> None:
        pipe.remove_all_hooks()
        pipe.to("cuda")

    return timer.lever(
        "CPU offload (whole call)",
        [
            Variant("off (default)", call, on_gpu, default=True),
            Variant("on (--offload)", call, lambda: pipe.enable_model_cpu_offload(device="cuda")),
        ],
        restore=on_gpu,
    )


def compile_rows(pipe, inputs: dict, timer: Timer) -> list[Row]:
    import torch

    dit = pipe.transformer
    lever = "regional torch.compile"
    rows = timer.lever(lever, [Variant("off (default)", lambda: dit(**inputs), default=True)])
    for block in dit.layers:  # one way only: compiled blocks stay compiled
        block.compile()
    started = time.perf_counter()
    try:
        with torch.inference_mode():
            dit(**inputs)
    except Exception as error:
        return [*rows, Row(lever, "on (--compile)", None, note=f"failed: {_first_line(error)}")]
    compile_s = time.perf_counter() - started
    row = timer.lever(lever, [Variant("on (--compile)", lambda: dit(**inputs))])[0]
    return [*rows, dataclasses.replace(row, note=f"first call, compiling: {compile_s:.1f} s")]


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description="Each speed lever on and off, on the same inputs.")
    add_model_arguments(parser)
    parser.add_argument("--seconds", type=float, default=10.0, help="song length the DiT levers run on")
    parser.add_argument("--vae-seconds", type=float, default=30.0, help="song length the VAE levers decode")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per row (after one warm-up); medians")
    parser.add_argument("--compile", action="store_true", help="also time regional torch.compile (slow to compile)")
    parser.add_argument("--json", type=Path, default=Path("bench_levers.json"))
    args = parser.parse_args(argv)

    backend = bench_backend(args)
    spec, device = backend.spec, backend.device
    pipe = backend.load()
    request = bench_request(args.seconds, spec.defaults.num_inference_steps)
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
    summary |= {"versions": library_versions(), "rows": [dataclasses.asdict(row) for row in rows]}
    args.json.write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
