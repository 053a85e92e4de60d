"""Benchmark: the language models' decoding speed (tokens per second), per backend.

    python -m tools.bench_lm                                # tiny planner and writer, transformers and mlx
    python -m tools.bench_lm --planner 1.7B --seconds 180     # a real planner: 900 codes
    python -m tools.bench_lm --random-weights full-size --seconds 180 --backends transformers  # 1.7B shape, no download
    python -m tools.bench_lm --random-weights 0.6B --seconds 10 --device cpu --repeats 3  # 0.6B, studio vs bare
    python -m tools.bench_lm --planner FOLDER ...          # a planner built before (build_full_size_planner)

The planner plans a song of ``--seconds`` (5 codes a second, with LM guidance, so two forward
passes per token); the lyrics writer writes ``--lyrics-tokens`` tokens. Prints a table and
writes JSON. ``--random-weights full-size`` builds a planner of the published 1.7B shape
(Qwen3: hidden 2048, 28 layers, 16 heads, 8 KV heads) with random weights and the tiny
planner's tokenizer, so the speed is the real model's with nothing downloaded; ``0.6B`` builds
the 0.6B planner's shape (Qwen3-0.6B: hidden 1024, 28 layers).

Beside each planner row stands a bare loop of the same model on the same backend
(``bare_tokens_per_second``) that makes the studio run's own forwards, recorded as it ran: the
same prompts' lengths left-padded into one batch (conditional rows, then unconditional: CFG as a
batch of 2 x takes), the same KV cache kind, dtype and attention mask, the same forced feeds,
and for each sampled token one batched forward with guidance and an argmax on the device; no
constraint, no top-p, no bookkeeping. ``overhead`` is the studio's seconds over the bare loop's
(1.0: the studio's decode loop costs nothing beyond the model's forwards). ``--repeats N``
alternates studio and bare runs N times and reports medians (a shared CPU's load drifts);
``--threads 1`` keeps torch to one thread (on a busy CPU, two threads wait on each other).
``overhead_in_run`` is the studio run's seconds over the seconds its own forwards took, each
waited for inside the run: the same question asked without a second model, so a shared CPU's
drifting load weighs on both sides alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from backend import RunControl
from lm.batch import last_logits
from lm.plan import PlannerSettings
from lm.planner import Planner
from lm.session import MLX_PREFILL_CHUNK, LoadedLM, cache_keyword, load_lm
from lyrics_lm import LyricsLM, LyricsRequest
from tools.tiny_model import ensure_tiny_lyrics_lm, ensure_tiny_planner

# The ACE-Step 5 Hz LM 1.7B (a Qwen3-1.7B fine-tune with the audio-code vocabulary added).
PLANNER_1_7B = dict(
    hidden_size=2048,
    intermediate_size=6144,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=40_960,
    rope_theta=1_000_000.0,
    tie_word_embeddings=True,
)
PLANNER_1_7B_VOCAB = 151_669 + 64_000  # Qwen3's vocabulary plus the audio codes
# The ACE-Step 5 Hz LM 0.6B (Qwen3-0.6B's shape, the same vocabulary).
PLANNER_0_6B = {**PLANNER_1_7B, "hidden_size": 1024, "intermediate_size": 3072}
PLANNER_SHAPES = {"0.6B": PLANNER_0_6B, "1.7B": PLANNER_1_7B, "full-size": PLANNER_1_7B}
LM_GUIDANCE = 2.0  # the bare loop's CFG scale, as the planner's default


def build_full_size_planner(target: Path, shape: str = "1.7B") -> Path:
    """A random-weight LM of a planner's shape (``PLANNER_SHAPES``) with the tiny planner's tokenizer, saved."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_planner())
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        config = Qwen3Config(
            **PLANNER_SHAPES[shape],
            vocab_size=max(PLANNER_1_7B_VOCAB, len(tokenizer)),
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        Qwen3ForCausalLM(config).save_pretrained(target)
    finally:
        torch.set_default_dtype(previous)
    tokenizer.save_pretrained(target)
    return target


@dataclass
class Forwards:
    """The forwards one planner run made, batch by batch: each batch's row prompts (token counts,
    conditional rows first) and the width of every feed after its prefill (1: a sampled token);
    ``seconds``: the time they took inside the run (each waited for, so the rest is the loop's own)."""

    batches: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def loader(self, device: str | None):
        """A ``Planner`` loader that records its batches' forwards (the studio's loop is unchanged)."""

        def load(source: str, backend: str) -> LoadedLM:
            lm = load_lm(source, backend, device=device)

            def new_batch(cond, uncond, takes, *rest):
                rows = [len(cond)] * takes + ([len(uncond)] * takes if uncond is not None else [])
                record = {"rows": rows, "takes": takes, "feeds": []}
                self.batches.append(record)
                started = time.perf_counter()
                batch = _Recording(lm.new_batch(cond, uncond, takes, *rest), record["feeds"], self)
                batch.wait(started)
                return batch

            return dataclasses.replace(lm, new_batch=new_batch)

        return load


class _Recording:
    """A decode batch that notes each feed's width and time and passes everything through."""

    def __init__(self, batch, feeds: list[int], forwards: Forwards) -> None:
        self._batch, self._feeds, self._forwards = batch, feeds, forwards

    def __getattr__(self, name):
        return getattr(self._batch, name)

    def wait(self, started: float) -> None:
        """Wait for the logits (mlx and CUDA compute them asynchronously); count the time as the forward's."""
        logits = self._batch.logits
        if hasattr(self._batch, "mx"):
            self._batch.mx.eval(logits)
        elif logits.is_cuda:
            self._batch.torch.cuda.synchronize()
        self._forwards.seconds += time.perf_counter() - started

    def feed(self, tokens) -> None:
        started = time.perf_counter()
        self._feeds.append(1)
        self._batch.feed(tokens)
        self.wait(started)

    def feed_ids(self, ids) -> None:
        started = time.perf_counter()
        self._feeds.append(len(ids))
        self._batch.feed_ids(ids)
        self.wait(started)


def load_planner(source: str, backend: str, device: str | None = None) -> tuple[Planner, Forwards, float]:
    """The studio's planner on ``source``, loaded and warmed up (first-call allocations), with the
    recorder of its forwards and its load time."""
    recorder = Forwards()
    planner = Planner(source, backend=backend, max_caption_tokens=32, device=device, loader=recorder.loader(device))
    started = time.perf_counter()
    planner.load()
    load_s = time.perf_counter() - started
    planner.plan("warm-up", "", seed=0, settings=PlannerSettings(max_caption_tokens=32), duration=10, bpm=120)
    return planner, recorder, load_s


def bench_planner(planner: Planner, recorder: Forwards, seconds: int) -> tuple[dict, Forwards]:
    """One timed plan: metadata plus ``seconds * 5`` codes; its figures and the forwards it made."""
    recorder.batches.clear()
    recorder.seconds = 0.0
    stats: dict = {}
    plan = planner.plan(
        "upbeat synth-pop, female vocals",
        "[verse]\nneon lights and midnight trains\n[chorus]\nwe are the sound",
        seed=1,
        settings=PlannerSettings(max_caption_tokens=32),
        stats=stats,
        duration=seconds,
    )
    row = {
        "model": "planner",
        "backend": planner.backend,
        "tokens": stats["tokens"],
        "codes": len(plan.codes),
        "seconds": stats["seconds"],
        "tokens_per_second": stats["tokens_per_second"],
        "forward_seconds": round(recorder.seconds, 3),
    }
    return row, Forwards(list(recorder.batches), recorder.seconds)


def bare_loop(source: str, backend: str, forwards: Forwards, device: str | None = None) -> float:
    """Seconds the plainest loop takes to make the studio run's own forwards (``forwards``): the same
    rows, left padding, prompt lengths, feeds, KV cache kind and dtype, with guidance and an argmax
    on the device in place of the constraint and the sampler."""
    run = _bare_mlx if backend == "mlx" else _bare_torch
    model = _bare_model(source, backend, device)
    run(model, Forwards([{"rows": [8, 6], "takes": 1, "feeds": [1, 2, 1]}]))  # warm-up: first-call allocations
    started = time.perf_counter()
    run(model, forwards)
    return time.perf_counter() - started


def _bare_model(source: str, backend: str, device: str | None):
    key = (source, backend, device)
    if key not in _MODELS:
        if backend == "mlx":
            from mlx_lm import load

            _MODELS[key] = load(source)[0]
        else:
            import torch
            from transformers import AutoModelForCausalLM

            from backend import pick_device

            info = pick_device(device)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, info.dtype))
            _MODELS[key] = model.to(info.device).eval()
    return _MODELS[key]


_MODELS: dict = {}  # one load per model for the warm-up and the timings


def _prompts(rows: list[int]) -> tuple[list[list[int]], list[int]]:
    """Left-padded rows of made-up ids of the recorded lengths, and each row's padding."""
    width = max(rows)
    return [[0] * (width - n) + [100 + i % 1000 for i in range(n)] for n in rows], [width - n for n in rows]


def _bare_torch(model, forwards: Forwards) -> None:
    import torch

    cache_name, device = cache_keyword(model), model.device

    def forward(ids, mask, positions, cache):
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                    logits_to_keep=1, **{cache_name: cache})  # fmt: skip
        return out.logits[:, -1], getattr(out, cache_name)

    with torch.inference_mode():
        for batch in forwards.batches:
            padded, pads = _prompts(batch["rows"])
            pad = torch.tensor(pads, device=device)[:, None]
            columns = torch.arange(len(padded[0]), device=device)[None]
            mask = (columns >= pad).long() if any(pads) else None
            rows, takes, after = len(pads), batch["takes"], len(padded[0]) - pad
            logits, cache = forward(torch.tensor(padded, device=device), mask, (columns - pad).clamp(min=0), None)
            for width in batch["feeds"]:
                if width == 1:
                    z = logits.float()
                    guided = z[takes:] + LM_GUIDANCE * (z[:takes] - z[takes:]) if rows > takes else z
                    ids = guided.argmax(-1).repeat(rows // takes)[:, None]
                else:
                    ids = torch.full((rows, width), 100, device=device)
                positions = after + torch.arange(width, device=device)[None]
                after = after + width
                mask = torch.cat([mask, mask.new_ones(rows, width)], dim=1) if mask is not None else None
                logits, cache = forward(ids, mask, positions, cache)
            logits.cpu()


def _bare_mlx(model, forwards: Forwards) -> None:
    import mlx.core as mx
    from mlx_lm.models.cache import BatchKVCache

    for batch in forwards.batches:
        padded, pads = _prompts(batch["rows"])
        cache = [BatchKVCache(pads) for _ in model.layers]
        rows, takes, ids = len(pads), batch["takes"], mx.array(padded)
        for start in range(0, ids.shape[1], MLX_PREFILL_CHUNK):
            logits = last_logits(model, ids[:, start : start + MLX_PREFILL_CHUNK], cache)
            mx.eval(logits)
        for width in batch["feeds"]:
            if width == 1:
                z = logits.astype(mx.float32)
                guided = z[takes:] + LM_GUIDANCE * (z[:takes] - z[takes:]) if rows > takes else z
                step = mx.tile(mx.argmax(guided, axis=-1), rows // takes)[:, None]
            else:
                step = mx.full((rows, width), 100, dtype=mx.int32)
            logits = last_logits(model, step, cache)
            mx.async_eval(logits)
        mx.eval(logits)


def compare(source: str, backend: str, seconds: int, device: str | None, repeats: int = 1) -> dict:
    """The studio's planner and the bare loop of its forwards, alternated ``repeats`` times (a shared
    CPU's load drifts): the median of each speed and of the pairs' ratios (``overhead``: the studio's
    seconds over the bare loop's for the same forwards; 1.0 is a loop that costs nothing)."""
    planner, recorder, load_s = load_planner(source, backend, device)
    studio, bare, ratios, own = [], [], [], []
    for _ in range(repeats):
        row, forwards = bench_planner(planner, recorder, seconds)
        bare_s = bare_loop(source, backend, forwards, device)
        studio.append(row["tokens"] / row["seconds"])
        bare.append(row["tokens"] / bare_s)
        ratios.append(row["seconds"] / bare_s)
        own.append(row["seconds"] / forwards.seconds)
    return {
        **row,
        "load_s": round(load_s, 2),
        "tokens_per_second": round(statistics.median(studio), 2),
        "bare_tokens_per_second": round(statistics.median(bare), 2),
        "overhead": round(statistics.median(ratios), 3),
        "overheads": [round(r, 3) for r in ratios],
        # The run's seconds over its own forwards' (timed within the run, so a shared CPU's drifting
        # load weighs on both alike): what the loop adds, measured without a second model.
        "overhead_in_run": round(statistics.median(own), 3),
        "overheads_in_run": [round(r, 3) for r in own],
    }


def bench_writer(source: str, backend: str, tokens: int) -> dict:
    writer = LyricsLM(source, backend=backend, device="cpu" if backend == "transformers" else None)
    started = time.perf_counter()
    writer.load()
    load_s = time.perf_counter() - started
    request = LyricsRequest(brief="a night train to Porto", seed=1, max_new_tokens=tokens)
    list(writer.write(LyricsRequest(brief="warm-up", seed=0, max_new_tokens=64)))
    count = 0
    started = time.perf_counter()
    for _ in writer.tokens(request, RunControl()):
        count += 1
    seconds = time.perf_counter() - started
    return {
        "model": "lyrics",
        "backend": backend,
        "load_s": round(load_s, 2),
        "tokens": count,
        "codes": None,
        "seconds": round(seconds, 3),
        "tokens_per_second": round(count / seconds, 1),
        "bare_tokens_per_second": None,
        "overhead": None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Tokens per second of the planner and the lyrics writer.")
    parser.add_argument("--planner", default=None, help="planner model (default: the tiny test planner)")
    parser.add_argument("--lyrics-model", default=None, help="lyrics model (default: the tiny test writer)")
    parser.add_argument(
        "--random-weights",
        choices=tuple(PLANNER_SHAPES),
        default=None,
        help="a planner of this shape with random weights (full-size: 1.7B); the default tiny run stays small",
    )
    parser.add_argument("--device", default=None, help="transformers device (default: CUDA, MPS or the CPU)")
    parser.add_argument("--seconds", type=int, default=60, help="song length the planner plans")
    parser.add_argument("--lyrics-tokens", type=int, default=300)
    parser.add_argument("--backends", nargs="+", default=None, help="default: transformers, and mlx when installed")
    parser.add_argument("--json", type=Path, default=Path("bench_lm.json"))
    parser.add_argument("--repeats", type=int, default=1, help="studio and bare runs alternated; medians reported")
    parser.add_argument("--threads", type=int, default=None, help="torch's CPU threads (1 on a busy shared CPU)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    backends = args.backends or ["transformers"] + (["mlx"] if importlib.util.find_spec("mlx_lm") else [])
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        planner = args.planner or str(ensure_tiny_planner())
        if args.random_weights:
            planner = str(build_full_size_planner(Path(folder) / f"planner-{args.random_weights}", args.random_weights))
        writer = args.lyrics_model or str(ensure_tiny_lyrics_lm())
        for backend in backends:
            rows.append(compare(planner, backend, args.seconds, args.device, args.repeats))
            if not args.random_weights:
                rows.append(bench_writer(writer, backend, args.lyrics_tokens))
    columns = ("model", "backend", "tokens", "codes", "seconds", "tokens_per_second", "bare_tokens_per_second",
               "overhead", "overhead_in_run")  # fmt: skip
    print(" ".join(f"{c:>22}" for c in columns))
    for row in rows:
        print(" ".join(f"{row.get(c)!s:>22}" for c in columns))
    args.json.write_text(json.dumps({"planner": planner, "lyrics": writer, "rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
