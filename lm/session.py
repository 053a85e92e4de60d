"""One way to run a causal LM, shared by the planner, Describe and the lyrics writer.

``load_lm`` loads a model on transformers (CUDA, MPS or the CPU) or on mlx-lm (Apple Silicon;
it also runs on a Linux CPU, which is how the tests exercise it). A loaded model decodes through
``new_batch`` (``lm.batch``): one or several sequences (and, under guidance, their unconditional
twins) in one forward, with the one sampler, seeded per batch, on the device. Nothing here knows
about Gradio.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import platform
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

BACKENDS = ("auto", "transformers", "mlx")
MLX_PREFILL_CHUNK = 256  # tokens per prefill step: mlx computes logits for every position


@dataclass(frozen=True)
class LoadedLM:
    """A loaded LM: its Hugging Face tokenizer and a factory of decode batches."""

    tokenizer: Any
    # (cond ids, uncond ids or None, takes, guidance, Sampling, seed) -> lm.batch.DecodeBatch
    new_batch: Callable[..., Any]
    backend: str
    eos_ids: frozenset[int] = frozenset()  # the model's own end-of-sequence ids


def pick_lm_backend(backend: str = "auto") -> str:
    """``backend`` checked; "auto" is mlx on Apple Silicon when mlx-lm is installed, else transformers."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend != "auto":
        return backend
    apple = sys.platform == "darwin" and platform.machine() == "arm64"
    return "mlx" if apple and importlib.util.find_spec("mlx_lm") is not None else "transformers"


def load_lm(source: str, backend: str, device: str | None = None) -> LoadedLM:
    """Load ``source`` (a Hub repo id or a local folder) on ``backend`` ("transformers" or "mlx").
    ``device`` (transformers only): None picks CUDA, MPS or the CPU."""
    return _load_mlx(source) if backend == "mlx" else _load_transformers(source, device)


def _int_ids(*values: Any) -> frozenset[int]:
    """Token ids from values that are an id, a list of ids or None (tokenizers and configs use all three)."""
    ids: set[Any] = set()
    for value in values:
        ids.update(value if isinstance(value, Iterable) else [value])
    return frozenset(i for i in ids if isinstance(i, int))


def _load_transformers(source: str, device_name: str | None = None) -> LoadedLM:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backend import pick_device

    device = pick_device(device_name)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, device.dtype))
    model = model.to(device.device).eval()

    from lm.batch import torch_batch

    eos = _int_ids(tokenizer.eos_token_id, model.generation_config.eos_token_id)
    return LoadedLM(tokenizer, functools.partial(torch_batch, model), "transformers", eos)


def cache_keyword(model: Any) -> str:
    """The name a transformers model's forward takes (and returns) its KV cache by: ``cache`` since
    transformers 5.23 (``past_key_values`` still works there, with a FutureWarning), ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _load_mlx(source: str) -> LoadedLM:
    from mlx_lm import load

    model, wrapper = load(source)
    tokenizer = getattr(wrapper, "_tokenizer", wrapper)

    from lm.batch import mlx_batch

    eos = _int_ids(tokenizer.eos_token_id, list(wrapper.eos_token_ids))
    return LoadedLM(tokenizer, functools.partial(mlx_batch, model), "mlx", eos)


@dataclass(frozen=True)
class Sampling:
    """How the sampler (``lm.batch``) picks: 0 temperature is greedy, top_p 1.0 and top_k 0 are off.

    The official ACE-Step LM loop (and mlx-lm) cuts top-k and top-p on the raw logits, then
    applies the temperature; transformers' ``generate`` applies the temperature first
    (``temperature_first``), so top-p cuts the sharpened distribution.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    temperature_first: bool = False
