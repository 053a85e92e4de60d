"""Benchmark: the language models' decoding speed (tokens per second), per backend.

    python -m tools.bench_lm                                # tiny planner and writer, transformers and mlx
    python -m tools.bench_lm --planner 1.7B --seconds 180     # a real planner: 900 codes
    python -m tools.bench_lm --random-weights full-size --seconds 180 --backends transformers  # 1.7B shape, no download

The planner plans a song of ``--seconds`` (5 codes a second, with LM guidance, so two forward
passes per token); the lyrics writer writes ``--lyrics-tokens`` tokens. Prints a table and
writes JSON. ``--random-weights full-size`` builds a planner of the published 1.7B shape
(Qwen3: hidden 2048, 28 layers, 16 heads, 8 KV heads) with random weights and the tiny
planner's tokenizer, so the speed is the real model's with nothing downloaded.
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


def build_full_size_planner(target: Path) -> Path:
    """A random-weight LM of the 1.7B planner's shape with the tiny planner's tokenizer, saved."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_planner())
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        config = Qwen3Config(
            **PLANNER_1_7B,
            vocab_size=max(PLANNER_1_7B_VOCAB, len(tokenizer)),
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        Qwen3ForCausalLM(config).save_pretrained(target)
    finally:
        torch.set_default_dtype(previous)
    tokenizer.save_pretrained(target)
    return target


def bench_planner(source: str, backend: str, seconds: int) -> dict:
    planner = Planner(source, backend=backend, max_caption_tokens=32)
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
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Tokens per second of the planner and the lyrics writer.")
    parser.add_argument("--planner", default=None, help="planner model (default: the tiny test planner)")
    parser.add_argument("--lyrics-model", default=None, help="lyrics model (default: the tiny test writer)")
    parser.add_argument("--random-weights", choices=("full-size",), default=None, help="a 1.7B-shaped planner")
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
            planner = str(build_full_size_planner(Path(folder) / "planner-1.7B"))
        writer = args.lyrics_model or str(ensure_tiny_lyrics_lm())
        for backend in backends:
            rows.append(bench_planner(planner, backend, args.seconds))
            if not args.random_weights:
                rows.append(bench_writer(writer, backend, args.lyrics_tokens))
    columns = ("model", "backend", "load_s", "tokens", "codes", "seconds", "tokens_per_second")
    print(" ".join(f"{c:>18}" for c in columns))
    for row in rows:
        print(" ".join(f"{row[c]!s:>18}" for c in columns))
    args.json.write_text(json.dumps({"planner": planner, "lyrics": writer, "rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
