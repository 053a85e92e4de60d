"""The planner's token sampler in array operations that torch, mlx and NumPy spell alike (``_TorchOps``,
``_MlxOps``, ``_NumpyOps``): top-k, then the top-p nucleus, then one draw a row from the softmax at the
temperature by its running sum (``lm.batch`` feeds it each step's guided logits).

Top-p keeps the fewest best tokens holding ``top_p`` of the mass (ACE-Step 1.5
``acestep/llm_inference.py``, ``_generate_with_cfg_custom``: top-k, top-p, then temperature). On a
GPU it takes one sort per row; on a CPU the best ``SORT_HEAD`` logits are tried first and otherwise
``_binned_threshold`` finds the cut without sorting the row. These give the same tokens but for
rounding at the nucleus' edge (the binned sums run in float64: 2 of 1,200 random rows at top_p 0.99
cut one token differently), and a seed repeats its tokens on a given device either way.
"""

from __future__ import annotations

import numpy as np

from lm.session import Sampling

# On a CPU, top-p first sorts this many best logits (a 150k vocabulary's full sort costs more than the
# forward of a small LM); the whole row only when they hold less than top_p of the mass.
SORT_HEAD = 1_024


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
