"""Benchmark: the language models' decoding speed (tokens per second), per backend.

    python -m tools.bench_lm                                # tiny planner and writer, transformers and mlx
    python -m tools.bench_lm --planner 1.7B --seconds 180     # a real planner: 900 codes
    python -m tools.bench_lm --random-weights full-size --seconds 180 --backends transformers  # 1.7B shape, no download
    python -m tools.bench_lm --random-weights 0.6B --seconds 10 --device cpu  # 0.6B shape, studio vs bare loop

The planner plans a song of ``--seconds`` (5 codes a second, with LM guidance, so two forward
passes per token); the lyrics writer writes ``--lyrics-tokens`` tokens. Prints a table and
writes JSON. ``--random-weights full-size`` builds a planner of the published 1.7B shape
(Qwen3: hidden 2048, 28 layers, 16 heads, 8 KV heads) with random weights and the tiny
planner's tokenizer, so the speed is the real model's with nothing downloaded; ``0.6B`` builds
the 0.6B planner's shape (Qwen3-0.6B: hidden 1024, 28 layers).

Beside each planner row stands a bare loop of the same model on the same backend
(``bare_tokens_per_second``): one prompt prefilled as a batch of two (conditional and
unconditional rows), then one batched forward per token with a KV cache, guidance and an argmax
on the device, nothing else. ``overhead`` is the bare loop's speed over the studio's: 1.0 means
the studio's decode loop costs nothing beyond the model's forwards.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

from backend import RunControl
from lm.plan import PlannerSettings
from lm.planner import Planner
from lm.session import cache_keyword
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
BARE_PROMPT_TOKENS = 96  # about the planner's prompt for a short caption and lyrics


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


def bench_planner(source: str, backend: str, seconds: int, device: str | None = None) -> dict:
    planner = Planner(source, backend=backend, max_caption_tokens=32, device=device)
    started = time.perf_counter()
    planner.load()
    load_s = time.perf_counter() - started
    settings = PlannerSettings(max_caption_tokens=32)
    stats: dict = {}
    planner.plan("warm-up", "", seed=0, settings=settings, duration=10, bpm=120)  # first-call allocations
    plan = planner.plan(
        "upbeat synth-pop, female vocals",
        "[verse]\nneon lights and midnight trains\n[chorus]\nwe are the sound",
        seed=1,
        settings=settings,
        stats=stats,
        duration=seconds,
    )
    return {
        "model": "planner",
        "backend": backend,
        "load_s": round(load_s, 2),
        "tokens": stats["tokens"],
        "codes": len(plan.codes),
        "seconds": stats["seconds"],
        "tokens_per_second": stats["tokens_per_second"],
    }


def bare_loop(source: str, backend: str, tokens: int, device: str | None = None) -> float:
    """Tokens per second of the plainest CFG decode of ``source``: batch-2 forwards with a KV cache."""
    run = _bare_mlx if backend == "mlx" else _bare_torch
    run(source, 8, device)  # warm-up: first-call allocations
    started = time.perf_counter()
    run(source, tokens, device)
    return round(tokens / (time.perf_counter() - started), 1)


def _bare_torch(source: str, tokens: int, device: str | None) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from backend import pick_device

    info = pick_device(device)
    model = _bare_torch.models.get(source)  # type: ignore[attr-defined]
    if model is None:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, info.dtype)).to(info.device).eval()
        _bare_torch.models[source] = model  # type: ignore[attr-defined]
    ids = torch.arange(2 * BARE_PROMPT_TOKENS, device=model.device).reshape(2, -1) % 1000 + 100
    cache = cache_keyword(model)
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        for _ in range(tokens):
            logits = out.logits[:, -1].float()
            token = (logits[1] + LM_GUIDANCE * (logits[0] - logits[1])).argmax()
            out = model(input_ids=token.expand(2, 1), use_cache=True, logits_to_keep=1, **{cache: getattr(out, cache)})
        out.logits.cpu()


_bare_torch.models = {}  # type: ignore[attr-defined]  # one load per model for the warm-up and the timing


def _bare_mlx(source: str, tokens: int, _device: str | None) -> None:
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.models.cache import make_prompt_cache

    model = _bare_mlx.models.get(source)  # type: ignore[attr-defined]
    if model is None:
        model = _bare_mlx.models[source] = load(source)[0]  # type: ignore[attr-defined]
    cache = make_prompt_cache(model)
    ids = mx.arange(2 * BARE_PROMPT_TOKENS).reshape(2, -1) % 1000 + 100
    logits = model(ids, cache=cache)[:, -1].astype(mx.float32)
    for _ in range(tokens):
        token = mx.argmax(logits[1] + LM_GUIDANCE * (logits[0] - logits[1]))
        logits = model(mx.broadcast_to(token.reshape(1, 1), (2, 1)), cache=cache)[:, -1].astype(mx.float32)
        mx.async_eval(logits)
    mx.eval(logits)


_bare_mlx.models = {}  # type: ignore[attr-defined]


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
    args = parser.parse_args(argv)

    backends = args.backends or ["transformers"] + (["mlx"] if importlib.util.find_spec("mlx_lm") else [])
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        planner = args.planner or str(ensure_tiny_planner())
        if args.random_weights:
            planner = str(build_full_size_planner(Path(folder) / f"planner-{args.random_weights}", args.random_weights))
        writer = args.lyrics_model or str(ensure_tiny_lyrics_lm())
        for backend in backends:
            row = bench_planner(planner, backend, args.seconds, args.device)
            bare = bare_loop(planner, backend, row["tokens"], args.device)
            overhead = round(bare / row["tokens_per_second"], 2) if row["tokens_per_second"] else None
            rows.append({**row, "bare_tokens_per_second": bare, "overhead": overhead})
            if not args.random_weights:
                rows.append(bench_writer(writer, backend, args.lyrics_tokens))
    columns = ("model", "backend", "tokens", "codes", "seconds", "tokens_per_second", "bare_tokens_per_second")
    print(" ".join(f"{c:>22}" for c in (*columns, "overhead")))
    for row in rows:
        print(" ".join(f"{row[c]!s:>22}" for c in (*columns, "overhead")))
    args.json.write_text(json.dumps({"planner": planner, "lyrics": writer, "rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
