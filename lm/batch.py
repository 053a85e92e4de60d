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
from lm.token_sampler import HeadTries, _MlxOps, _NumpyOps, _sample, _TorchOps


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
