"""DCW: differential correction in the wavelet domain, as the official ACE-Step 1.5 sampler applies it.

After each sampler step, the new latent ``x_next`` and the step's predicted clean latent
``denoised = x - t·v`` are split by a one-level Haar transform along time (latents are
``[batch, frames, channels]`` at 25 Hz; an odd frame count is zero-padded by one frame), and
each band of ``x_next`` is pushed away from the same band of ``denoised``:
``band += s·(band_x - band_denoised)``, with ``s = t·scaler`` (so the correction fades to
nothing as ``t`` reaches 0, and vanishes on the last step, where ``x_next`` is ``denoised``).
The official default mode is "double": the low band with ``dcw_scaler`` 0.05, the high band
with ``dcw_high_scaler`` 0.02.

Source: official ``acestep/models/mlx/dit_generate.py`` (``mlx_generate_diffusion``: the DCW
step after the sampler update) and the default values in
``acestep/core/generation/handler/generate_music.py`` (``generate_music``; on by default for
turbo, ``_resolve_dcw_enabled``). Meng Yu et al., "Elucidating the SNR-t Bias of Diffusion
Probabilistic Models", CVPR 2026.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DCW_SCALER = 0.05  # low band, official dcw_scaler
DCW_HIGH_SCALER = 0.02  # high band, official dcw_high_scaler ("double" mode)
_ROOT_HALF = 1.0 / math.sqrt(2.0)


def haar_split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One-level orthonormal Haar transform along frames: ``[B, T, C]`` to low and high ``[B, ceil(T/2), C]``."""
    import torch

    if x.shape[1] % 2:
        x = torch.cat([x, x.new_zeros(x.shape[0], 1, x.shape[2])], dim=1)
    even, odd = x[:, 0::2], x[:, 1::2]
    return (even + odd) * _ROOT_HALF, (even - odd) * _ROOT_HALF


def haar_merge(low: torch.Tensor, high: torch.Tensor, frames: int) -> torch.Tensor:
    """The inverse of ``haar_split``, cut back to ``frames``."""
    import torch

    even, odd = (low + high) * _ROOT_HALF, (low - high) * _ROOT_HALF
    return torch.stack([even, odd], dim=2).reshape(low.shape[0], -1, low.shape[2])[:, :frames]


def dcw_correct(
    x_next: torch.Tensor,
    denoised: torch.Tensor,
    t: float,
    scaler: float = DCW_SCALER,
    high_scaler: float = DCW_HIGH_SCALER,
) -> torch.Tensor:
    """``x_next``'s Haar bands pushed away from ``denoised``'s: by ``t·scaler`` (low), ``t·high_scaler`` (high)."""
    low_gain, high_gain = t * scaler, t * high_scaler
    if low_gain == 0.0 and high_gain == 0.0:
        return x_next
    x_low, x_high = haar_split(x_next.float())
    d_low, d_high = haar_split(denoised.float())
    low = x_low + low_gain * (x_low - d_low)
    high = x_high + high_gain * (x_high - d_high)
    return haar_merge(low, high, x_next.shape[1]).to(x_next.dtype)
