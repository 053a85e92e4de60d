"""ADG (angle-based dynamic guidance), the official alternative to APG on base and SFT checkpoints.

Follows ``adg_forward`` in the official ``acestep/models/common/apg_guidance.py`` with the
arguments the official base ``generate_audio`` passes (``use_adg``: latents ``x_t``, sigma the
current ``t``, the angle clipped to 3.14/6, no norm rescaling). In words: the conditional and
null velocities give two predicted clean latents ``x̂ = x - t·v``; per frame, the angle between
them (over channels) is scaled by ``guidance_scale - 1`` and clipped; the guided clean latent
turns the conditional one by that angle, away from the null one, and the velocity is read back
from it: ``v = (x - x̂_guided) / t``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

ADG_ANGLE_CLIP = 3.14 / 6  # the official default, written as the official code writes it
_SMALL_ANGLE = 1e-3


def adg_velocity(
    latents: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor, t: float, guidance_scale: float
) -> torch.Tensor:
    """The ADG-guided velocity for ``latents`` ``[B, T, C]`` at time ``t`` from the conditional and null velocities."""
    import torch

    weight = max(guidance_scale - 1.0, 0.0) + 1e-3
    x = latents.float()
    clean_cond = x - t * cond.float()
    clean_null = x - t * uncond.float()
    cos = torch.nn.functional.cosine_similarity(clean_cond.double(), clean_null.double(), dim=-1, eps=1e-12)
    theta = torch.acos(cos.clamp(-1.0 + 1e-6, 1.0 - 1e-6)).float().unsqueeze(-1)
    turned = torch.clamp(weight * theta, -ADG_ANGLE_CLIP, ADG_ANGLE_CLIP)
    diff = clean_cond - clean_null
    along = (diff * clean_null).sum(-1, keepdim=True) / ((clean_null * clean_null).sum(-1, keepdim=True) + 1e-8)
    across = diff - along * clean_null
    sin = torch.sin(theta)
    # Where the two barely differ in angle the ratio sin(θ')/sin(θ) is unstable: the weight stands in for it.
    ratio = torch.where(
        sin > _SMALL_ANGLE, torch.sin(turned) / sin.clamp_min(_SMALL_ANGLE), torch.full_like(sin, weight)
    )
    guided_clean = torch.cos(turned) * clean_cond + ratio * across
    return ((x - guided_clean) / t).to(latents.dtype)
