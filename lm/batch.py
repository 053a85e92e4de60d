"""Batched decoding on the device, for the planner: CFG as one forward, and the constraint's mask,
the guidance and the sampling as tensor operations, so the sampled tokens never leave the device
unless the caller asks (``host``).

A batch holds ``takes`` conditional rows and, with guidance, as many unconditional rows after
them, as the official CFG loop does (ACE-Step 1.5 ``acestep/llm_inference.py``,
``_generate_with_cfg_custom``: ``[cond..., uncond...]`` in one forward, guided logits
``uncond + s * (cond - uncond)`` in float32, then top-k and top-p cut, then the temperature).
Prompts of different lengths are left-padded to one width (``_run_pt``'s padding side), with
position ids counted from each row's first real token.

Sampling draws one uniform number per row from a generator seeded once per batch and takes the
token where the softmax's running sum passes it, so a seed repeats its tokens on the same device
and backend (not across devices: their random streams differ). Top-p keeps the fewest best tokens
holding ``top_p`` of the mass, found with one sort per row, on the device and with no copy to the
host (on a CPU, where host and device are one, NumPy finds it by bins, without a sort). Nothing
here knows about Gradio.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from lm.session import MLX_PREFILL_CHUNK, Sampling, cache_keyword

# On a CPU, top-p first sorts this many best logits (a 150k vocabulary's full sort costs more than the
# forward of a small LM); the whole row only when they hold less than top_p of the mass.
SORT_HEAD = 1_024


class DecodeBatch(Protocol):
    """``takes`` sequences decoded together (each with its unconditional twin under guidance)."""

    takes: int

    @property
    def vocab_size(self) -> int:
        """The width of the model's logits (its vocabulary, padding included)."""
        ...

    def index(self, ids: np.ndarray) -> Any:
        """Token ids as a device index (cached per array: the constraint's sets recur)."""
        ...

    def pick(self, allowed: Any = None) -> Any:
        """One token id per take, on the device, sampled among ``allowed`` (an ``index``; None: the
        whole vocabulary)."""
        ...

    def feed(self, tokens: Any) -> None:
        """Each take's token (a ``pick``) to its rows; the next logits are computed."""
        ...

    def feed_ids(self, ids: Sequence[int]) -> None:
        """The same ids (forced text) to every row."""
        ...

    def host(self, tokens: Sequence[Any]) -> np.ndarray:
        """Picked tokens as a ``[takes, steps]`` NumPy array: the one copy back to the host."""
        ...


def _rows(cond: list[int], uncond: list[int] | None, takes: int) -> tuple[list[list[int]], list[int]]:
    prompts = [cond] * takes + ([uncond] * takes if uncond is not None else [])
    width = max(len(p) for p in prompts)
    return [[0] * (width - len(p)) + p for p in prompts], [width - len(p) for p in prompts]


class _Index:
    """Device copies of host id arrays, kept while their arrays live (keyed by identity)."""

    def __init__(self, convert) -> None:
        self.convert = convert
        self.cache: dict[int, tuple[np.ndarray, Any]] = {}

    def __call__(self, ids: np.ndarray) -> Any:
        hit = self.cache.get(id(ids))
        if hit is None or hit[0] is not ids:
            hit = self.cache[id(ids)] = (ids, self.convert(np.asarray(ids, dtype=np.int64)))
        return hit[1]


# ---- transformers (torch)


def torch_batch(model: Any, cond: list[int], uncond: list[int] | None, takes: int, guidance: float,
                sampling: Sampling, seed: int) -> DecodeBatch:  # fmt: skip
    """A batch on ``model``'s device; ``uncond`` None decodes without guidance."""
    return _TorchBatch(model, cond, uncond, takes, guidance, sampling, seed)


class _TorchBatch:
    def __init__(self, model, cond, uncond, takes, guidance, sampling, seed) -> None:
        import torch

        self.torch, self.model, self.takes = torch, model, takes
        self.guidance = guidance if uncond is not None else None
        self.sampling = sampling
        device = model.device
        padded, pads = _rows(cond, uncond, takes)
        self.rows = len(padded)
        pad = torch.tensor(pads, device=device)[:, None]
        width = len(padded[0])
        columns = torch.arange(width, device=device)[None]
        # A mask only when rows differ in length: without one the model takes its fast causal path.
        self.mask = (columns >= pad).long() if any(pads) else None
        self.next_position = width - pad[:, 0]
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.head = HeadTries()
        self.index = _Index(lambda ids: torch.from_numpy(ids).to(device))
        self.cache = None
        self.cache_name = cache_keyword(model)
        self._forward(torch.tensor(padded, device=device), (columns - pad).clamp(min=0))

    def _forward(self, ids, positions) -> None:
        with self.torch.inference_mode():
            out = self.model(
                input_ids=ids,
                attention_mask=self.mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
                **{self.cache_name: self.cache},
            )
        self.cache = getattr(out, self.cache_name)
        self.logits = out.logits[:, -1]

    def _step(self, ids) -> None:
        torch = self.torch
        count = ids.shape[1]
        positions = self.next_position[:, None] + torch.arange(count, device=ids.device)[None]
        self.next_position = self.next_position + count
        if self.mask is not None:
            self.mask = torch.cat([self.mask, self.mask.new_ones(self.rows, count)], dim=1)
        self._forward(ids, positions)

    def pick(self, allowed=None):
        torch = self.torch
        with torch.inference_mode():
            z = (self.logits if allowed is None else self.logits.index_select(-1, allowed)).float()
            if self.guidance is not None:
                cond, uncond = z[: self.takes], z[self.takes :]
                z = uncond + self.guidance * (cond - uncond)
            picked = _sample(_TorchOps(torch), z, self.sampling, self._uniform, self.head)
            return picked if allowed is None else allowed[picked]

    @property
    def vocab_size(self) -> int:
        return int(self.logits.shape[-1])

    def _uniform(self, shape):
        return self.torch.rand(shape, generator=self.generator, device=self.logits.device)

    def feed(self, tokens) -> None:
        self._step((tokens.repeat(2) if self.guidance is not None else tokens)[:, None])

    def feed_ids(self, ids: Sequence[int]) -> None:
        row = self.torch.tensor(list(ids), device=self.logits.device)[None]
        self._step(row.expand(self.rows, -1))

    def host(self, tokens: Sequence[Any]) -> np.ndarray:
        if not tokens:
            return np.zeros((self.takes, 0), dtype=np.int64)
        return self.torch.stack(list(tokens), dim=1).cpu().numpy()


# ---- mlx-lm


_mlx_streams = threading.local()


def mlx_batch(model: Any, cond: list[int], uncond: list[int] | None, takes: int, guidance: float,
              sampling: Sampling, seed: int) -> DecodeBatch:  # fmt: skip
    """A batch on mlx-lm's batch KV cache (left padding per row, as its BatchGenerator uses)."""
    return _MlxBatch(model, cond, uncond, takes, guidance, sampling, seed)


class _MlxOps:
    """The few array operations ``_sample`` needs, in mlx's spelling."""

    def __init__(self, mx) -> None:
        self.mx = mx

    def where(self, condition, a, b):
        return self.mx.where(condition, a, b)

    def log(self, x):
        return self.mx.log(x)

    def clip(self, x, low: float, high: float):
        return self.mx.clip(x, low, high)

    def softmax(self, z):
        return self.mx.softmax(z, axis=-1)

    def kth_best(self, z, k: int):
        return self.mx.sort(z, axis=-1)[:, -k][:, None]

    def sort_descending(self, z):
        return self.mx.sort(z, axis=-1)[:, ::-1]

    def cumsum(self, x):
        return self.mx.cumsum(x, axis=-1)

    def row_min(self, x):
        return x.min(axis=-1, keepdims=True)

    def on_cpu(self, z) -> bool:
        return self.mx.default_device() == self.mx.cpu

    def head(self, z, k: int):
        return self.mx.sort(self.mx.topk(z, k, axis=-1), axis=-1)[:, ::-1]

    def log_total(self, z):
        return self.mx.logsumexp(z, axis=-1, keepdims=True)

    def exp(self, x):
        return self.mx.exp(x)

    def all(self, x) -> bool:
        return bool(self.mx.all(x).item())

    def numpy(self, z) -> np.ndarray:
        return np.array(z)

    def from_numpy(self, x):
        return self.mx.array(x)

    def minimum(self, x, high: int):
        return self.mx.minimum(x, high)


class _NumpyOps:
    """The same operations in NumPy: mlx's sampling on a CPU, where host and device are one memory
    and mlx's CPU kernels for exp, softmax and sort are many times slower than NumPy's."""

    def where(self, condition, a, b):
        return np.where(condition, a, b)

    def log(self, x):
        return np.log(x)

    def clip(self, x, low: float, high: float):
        return np.clip(x, low, high)

    def softmax(self, z):
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def kth_best(self, z, k: int):
        return np.partition(z, z.shape[-1] - k, axis=-1)[:, -k][:, None]

    def sort_descending(self, z):
        return -np.sort(-z, axis=-1)

    def cumsum(self, x):
        return np.cumsum(x, axis=-1)

    def row_min(self, x):
        return x.min(axis=-1, keepdims=True)

    def on_cpu(self, z) -> bool:
        return True

    def head(self, z, k: int):
        return -np.sort(-np.partition(z, z.shape[-1] - k, axis=-1)[:, -k:], axis=-1)

    def log_total(self, z):
        top = z.max(axis=-1, keepdims=True)
        return top + np.log(np.exp(z - top).sum(axis=-1, keepdims=True))

    def exp(self, x):
        return np.exp(x)

    def all(self, x) -> bool:
        return bool(x.all())

    def numpy(self, z) -> np.ndarray:
        return z

    def from_numpy(self, x):
        return x

    def minimum(self, x, high: int):
        return np.minimum(x, high)


class _TorchOps:
    """The same operations in torch's spelling."""

    def __init__(self, torch) -> None:
        self.torch = torch

    def where(self, condition, a, b):
        return self.torch.where(condition, a, b)

    def log(self, x):
        return self.torch.log(x)

    def clip(self, x, low: float, high: float):
        return x.clamp(low, high)

    def softmax(self, z):
        return self.torch.softmax(z, dim=-1)

    def kth_best(self, z, k: int):
        return z.topk(k, dim=-1).values[:, -1:]

    def sort_descending(self, z):
        return z.sort(dim=-1, descending=True).values

    def cumsum(self, x):
        return x.cumsum(dim=-1)

    def row_min(self, x):
        return x.amin(dim=-1, keepdim=True)

    def on_cpu(self, z) -> bool:
        return z.device.type == "cpu"

    def head(self, z, k: int):
        return z.topk(k, dim=-1).values

    def log_total(self, z):
        return z.logsumexp(dim=-1, keepdim=True)

    def exp(self, x):
        return x.exp()

    def all(self, x) -> bool:
        return bool(x.all())

    def numpy(self, z) -> np.ndarray:
        return z.numpy()

    def from_numpy(self, x):
        return self.torch.from_numpy(x)

    def minimum(self, x, high: int):
        return x.clamp(max=high)


class _MlxBatch:
    def __init__(self, model, cond, uncond, takes, guidance, sampling, seed) -> None:
        import mlx.core as mx
        from mlx_lm.models.cache import BatchKVCache

        # Since mlx 0.31.2 streams belong to the thread that made them (see lm.session).
        if not hasattr(_mlx_streams, "stream"):
            _mlx_streams.stream = mx.new_stream(mx.default_device())
        self.mx, self.model, self.takes, self.stream = mx, model, takes, _mlx_streams.stream
        self.guidance = guidance if uncond is not None else None
        self.sampling = sampling
        padded, pads = _rows(cond, uncond, takes)
        self.rows = len(padded)
        self.key = mx.random.key(seed)
        self.on_cpu = mx.default_device() == mx.cpu
        self.head = HeadTries()
        self.index = _Index(lambda ids: mx.array(ids.astype(np.int32)))
        self.cache = [BatchKVCache(pads) for _ in model.layers]
        ids = mx.array(padded)
        with mx.stream(self.stream):
            for start in range(0, ids.shape[1], MLX_PREFILL_CHUNK):
                self.logits = last_logits(model, ids[:, start : start + MLX_PREFILL_CHUNK], self.cache)
                mx.eval(self.logits)

    def _step(self, ids) -> None:
        with self.mx.stream(self.stream):
            self.logits = last_logits(self.model, ids, self.cache)
            self.mx.async_eval(self.logits)

    @property
    def vocab_size(self) -> int:
        return int(self.logits.shape[-1])

    def _uniform(self, shape):
        self.key, draw = self.mx.random.split(self.key)
        return self.mx.random.uniform(shape=shape, key=draw)

    def pick(self, allowed=None):
        mx = self.mx
        with mx.stream(self.stream):
            z = (self.logits if allowed is None else mx.take(self.logits, allowed, axis=-1)).astype(mx.float32)
            if self.guidance is not None:
                cond, uncond = z[: self.takes], z[self.takes :]
                z = uncond + self.guidance * (cond - uncond)
            if self.on_cpu:  # the guided logits to NumPy (the same memory) and one index back
                uniform = lambda shape: np.array(self._uniform(shape))  # noqa: E731
                drawn = _sample(_NumpyOps(), np.array(z), self.sampling, uniform, self.head)
                picked = mx.array(drawn.astype(np.int32))
            else:
                picked = _sample(_MlxOps(mx), z, self.sampling, self._uniform, self.head)
            token = picked if allowed is None else allowed[picked]
            mx.async_eval(token)
            return token

    def feed(self, tokens) -> None:
        rows = self.mx.concatenate([tokens, tokens]) if self.guidance is not None else tokens
        self._step(rows[:, None])

    def feed_ids(self, ids: Sequence[int]) -> None:
        row = self.mx.array([list(ids)] * self.rows)
        self._step(row)

    def host(self, tokens: Sequence[Any]) -> np.ndarray:
        if not tokens:
            return np.zeros((self.takes, 0), dtype=np.int64)
        return np.array(self.mx.stack(list(tokens), axis=1)).astype(np.int64)


def last_logits(model: Any, ids: Any, cache: Any) -> Any:
    """mlx-lm: each row's logits at its last position, ``[rows, vocab]``. mlx-lm's models return
    logits for every position; for several tokens (a prefill, forced text) the head runs on the last
    hidden state alone (a 150k-token head over a 256-token chunk costs more than the chunk's layers)."""
    inner = getattr(model, "model", None)
    tied = getattr(getattr(model, "args", None), "tie_word_embeddings", None)
    if ids.shape[1] == 1 or inner is None or (tied is None and not hasattr(model, "lm_head")):
        return model(ids, cache=cache)[:, -1, :]
    hidden = inner(ids, cache)[:, -1:, :]
    head = inner.embed_tokens.as_linear if tied else model.lm_head
    return head(hidden)[:, -1, :]


# ---- the sampler, in array operations both torch and mlx spell alike


def _sample(ops, z, sampling: Sampling, uniform, head: HeadTries | None = None):
    """Row-wise indices into ``z`` ([rows, n] float32 logits): greedy at temperature 0; else top-k,
    then top-p cut (on the raw logits unless ``temperature_first``), then one draw per row from the
    softmax at the temperature, by its cumulative sum (one uniform a row: no noise over the vocabulary)."""
    if sampling.temperature == 0:
        return z.argmax(-1)
    temperature = sampling.temperature
    if sampling.temperature_first:
        z, temperature = z / temperature, 1.0
    if sampling.top_k and sampling.top_k < z.shape[-1]:
        z = ops.where(z >= ops.kth_best(z, sampling.top_k), z, float("-inf"))
    if sampling.top_p < 1.0:
        z = ops.where(_nucleus(ops, z, sampling.top_p, head), z, float("-inf"))
    held = ops.cumsum(ops.softmax(z / temperature))
    # The first token whose cumulative mass passes the draw (a cut token adds no mass, so is never it).
    draw = uniform((z.shape[0], 1)) * held[:, -1:]
    return ops.minimum((held <= draw).sum(-1), z.shape[-1] - 1)


class HeadTries:
    """Whether trying the best ``SORT_HEAD`` logits first is worth it for a batch: after two misses
    in a row (a flat distribution, as a random-weight LM's) only every 16th token tries. Either way
    the nucleus is the same, so this changes the time, never the tokens."""

    def __init__(self) -> None:
        self.misses = 0
        self.calls = 0

    def worth(self) -> bool:
        self.calls += 1
        return self.misses < 2 or self.calls % 16 == 0

    def note(self, hit: bool) -> None:
        self.misses = 0 if hit else self.misses + 1


def _nucleus(ops, z, top_p: float, tries: HeadTries | None = None):
    """The fewest best tokens of each row holding ``top_p`` of its probability (and any tied with the
    last of them): those at or above the worst logit whose better tokens hold less than ``top_p``.
    On a CPU (where reading a flag back costs nothing) the best ``SORT_HEAD`` are tried first (when
    ``tries`` finds it worth it), then ``_binned_threshold`` finds that logit without a sort; on
    other devices one sort per row. All three give the same tokens, so a seed draws alike either way."""
    if not ops.on_cpu(z):
        return _sorted_nucleus(ops, z, top_p)
    if z.shape[-1] > SORT_HEAD and (tries is None or tries.worth()):
        head = ops.head(z, SORT_HEAD)
        p = ops.exp(head - ops.log_total(z))
        held = ops.cumsum(p)
        hit = ops.all(held[:, -1:] >= top_p)
        if tries is not None:
            tries.note(hit)
        if hit:
            return z >= ops.row_min(ops.where(held - p < top_p, head, float("inf")))
    return z >= ops.from_numpy(_binned_threshold(ops.numpy(z), top_p))


def _sorted_nucleus(ops, z, top_p: float):
    best = ops.sort_descending(z)
    p = ops.softmax(best)
    better = ops.cumsum(p) - p
    return z >= ops.row_min(ops.where(better < top_p, best, float("inf")))


_BINS = 2_048


def _binned_threshold(z: np.ndarray, top_p: float) -> np.ndarray:
    """Each row's nucleus threshold, ``[rows, 1]``: the largest logit ``v`` whose tokens at or above it
    hold ``top_p`` of the mass, found without sorting the row (a CPU sorts a 150k row in milliseconds).
    The row's mass is summed into ``_BINS`` bins of equal width by logit, best first, to the bin
    where it reaches ``top_p``; only that bin's few logits are sorted."""
    out = np.empty((z.shape[0], 1), dtype=z.dtype)
    for r, row in enumerate(z):
        finite = np.isfinite(row)
        row = row if finite.all() else row[finite]
        top, low = row.max(), row.min()
        if top == low:
            out[r] = top
            continue
        p = np.exp(row - top)
        p /= p.sum(dtype=np.float64)
        # Rounding keeps order, so the bins do: a better logit never lands in a lower bin, ties share one.
        bins = ((row - low) * ((_BINS - 1) / (top - low))).astype(np.intp)
        from_top = np.cumsum(np.bincount(bins, weights=p, minlength=_BINS)[::-1])
        j = min(int(np.argmax(from_top >= top_p)), _BINS - 1) if from_top[-1] >= top_p else _BINS - 1
        above = from_top[j - 1] if j else 0.0
        here = bins == _BINS - 1 - j
        values, mass = row[here], p[here]
        order = np.argsort(-values, kind="stable")
        held = above + np.cumsum(mass[order], dtype=np.float64)
        out[r] = values[order][
            min(int(np.argmax(held >= top_p)) if held[-1] >= top_p else held.size - 1, held.size - 1)
        ]
    return out
