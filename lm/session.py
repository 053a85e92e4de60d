"""One way to run a causal LM, shared by the planner and the lyrics writer.

``load_lm`` loads a model on transformers (CUDA, MPS or the CPU) or on mlx-lm (Apple Silicon;
it also runs on a Linux CPU, which is how the tests exercise it). A loaded model hands out
sessions: ``feed(ids)`` runs the ids through the model, keeping the session's own KV cache, and
returns the next-token logits as a float32 NumPy vector. ``sample`` picks a token from such a
vector with the caller's temperature, top-p and top-k and a seeded NumPy generator, so a seed
draws the same tokens from the same logits on every backend.

The planner decodes through ``new_batch`` instead (``lm.batch``): several takes and their
unconditional twins in one forward, guidance and sampling on the device. Nothing here knows
about Gradio.
"""

from __future__ import annotations

import functools
import importlib.util
import platform
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

BACKENDS = ("auto", "transformers", "mlx")
MLX_PREFILL_CHUNK = 256  # tokens per prefill step: mlx computes logits for every position
SORT_HEAD = 1_024  # candidates sorted first for top-p; the whole vocabulary only when they hold too little mass


class Session(Protocol):
    def feed(self, ids: Sequence[int]) -> np.ndarray:
        """Run ``ids`` through the model after everything fed before; the next token's logits."""
        ...


@dataclass(frozen=True)
class LoadedLM:
    """A loaded LM: its Hugging Face tokenizer and a factory of decode sessions."""

    tokenizer: Any
    new_session: Callable[[], Session]
    backend: str
    eos_ids: frozenset[int] = frozenset()  # the model's own end-of-sequence ids
    # (cond ids, uncond ids or None, takes, guidance, Sampling, seed) -> lm.batch.DecodeBatch
    new_batch: Callable[..., Any] | None = None


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

    class TorchSession:
        def __init__(self) -> None:
            self.cache = None

        def feed(self, ids: Sequence[int]) -> np.ndarray:
            # Inference mode only around the forward pass: a generator must not leave it on between yields.
            with torch.inference_mode():
                inputs = torch.tensor([list(ids)], device=model.device)
                out = model(input_ids=inputs, past_key_values=self.cache, use_cache=True, logits_to_keep=1)
            self.cache = out.past_key_values
            return out.logits[0, -1].float().cpu().numpy()

    from lm.batch import torch_batch

    eos = _int_ids(tokenizer.eos_token_id, model.generation_config.eos_token_id)
    return LoadedLM(tokenizer, TorchSession, "transformers", eos, functools.partial(torch_batch, model))


_mlx_streams = threading.local()


def _load_mlx(source: str) -> LoadedLM:
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.models.cache import make_prompt_cache

    model, wrapper = load(source)
    tokenizer = getattr(wrapper, "_tokenizer", wrapper)

    class MlxSession:
        def __init__(self) -> None:
            # Since mlx 0.31.2 streams belong to the thread that made them: a Gradio worker
            # thread needs its own, or the GPU raises "There is no Stream(gpu, 0) in current thread".
            if not hasattr(_mlx_streams, "stream"):
                _mlx_streams.stream = mx.new_stream(mx.default_device())
            self.stream = _mlx_streams.stream
            self.cache = make_prompt_cache(model)

        def feed(self, ids: Sequence[int]) -> np.ndarray:
            ids = list(ids)
            with mx.stream(self.stream):
                for start in range(0, len(ids), MLX_PREFILL_CHUNK):
                    logits = model(mx.array([ids[start : start + MLX_PREFILL_CHUNK]]), cache=self.cache)
                    last = logits[0, -1].astype(mx.float32)
                    mx.eval(last)
            return np.array(last)

    from lm.batch import mlx_batch

    eos = _int_ids(tokenizer.eos_token_id, list(wrapper.eos_token_ids))
    return LoadedLM(tokenizer, MlxSession, "mlx", eos, functools.partial(mlx_batch, model))


@dataclass(frozen=True)
class Sampling:
    """How ``sample`` picks: 0 temperature is greedy, top_p 1.0 and top_k 0 are off.

    The official ACE-Step LM loop (and mlx-lm) cuts top-k and top-p on the raw logits, then
    applies the temperature; transformers' ``generate`` applies the temperature first
    (``temperature_first``), so top-p cuts the sharpened distribution.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    temperature_first: bool = False


def sample(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> int:
    """An index into ``logits``, drawn with one ``rng.random()`` (none when greedy)."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.size == 1:
        return 0
    if sampling.temperature == 0:
        return int(np.argmax(logits))
    temperature = sampling.temperature
    if sampling.temperature_first:
        logits, temperature = logits / temperature, 1.0
    order = _candidates(logits, sampling.top_k, sampling.top_p)
    z = logits[order] / temperature
    weights = np.cumsum(np.exp(z - z.max()))
    pick = int(np.searchsorted(weights, rng.random() * weights[-1], side="right"))
    return int(order[min(pick, order.size - 1)])


def _candidates(logits: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
    """The indices sampling may pick: the ``top_k`` best, then the fewest best holding ``top_p`` of the mass."""
    limit = min(top_k or logits.size, logits.size)
    if top_p >= 1.0:
        return np.arange(logits.size) if limit == logits.size else _best(logits, limit)
    order = _best(logits, min(limit, SORT_HEAD))
    peak = logits[order[0]]
    total = np.exp(logits - peak).sum()
    mass = np.cumsum(np.exp(logits[order] - peak)) / total
    if mass[-1] < top_p and order.size < limit:
        # The head holds too little mass: sort the lot (rare with a trained LM).
        order = np.argsort(-logits)[:limit]
        mass = np.cumsum(np.exp(logits[order] - peak)) / total
    return order[: int(np.searchsorted(mass, top_p)) + 1]


def _best(logits: np.ndarray, count: int) -> np.ndarray:
    """The indices of the ``count`` highest logits, highest first."""
    order = np.argpartition(-logits, count - 1)[:count] if count < logits.size else np.arange(logits.size)
    return order[np.argsort(-logits[order])]
