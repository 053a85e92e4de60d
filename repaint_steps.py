"""Official repaint in the sampler: the source re-imposed outside the segment while the new part is made.

diffusers' repaint only conditions the DiT on the source (its context latents); the official studio
also pins every frame outside the segment to the source, noised to the sampler's next timestep, for
the first share of the steps, and blends the finished latents into the source over a few frames at
the segment's edges. Followed here (read, not copied) from ACE-Step 1.5's newer code:

- ``acestep/core/generation/handler/generate_music.py`` ``_resolve_repaint_config``: mode and
  strength -> (injection ratio, latent crossfade frames); balanced at strength s: ratio 1 - s,
  ``round(25 * (1 - s))`` frames; conservative: 1 and 25; aggressive: 0 and 0.
- ``acestep/models/turbo/modeling_acestep_v15_turbo.py`` ``generate_audio``: after step i (never the
  last), while ``i < round(ratio * steps)``, frames outside the mask become
  ``t_next * noise + (1 - t_next) * source`` with the run's own starting noise and the timestep the
  step arrived at (``_repaint_step_injection``); after the last step the latents are blended into the
  source with linear ramps outside the segment (``_repaint_boundary_blend``).
- ``acestep/core/generation/handler/conditioning_masks.py``: the mask is the segment, in latent frames.

The source latents are the pipeline's own: the DiT's context latents hold the VAE encoding of the
source outside the segment (``AceStepPipeline.prepare_src_latents``; silence inside) and the mask in
their second half, so the first DiT call gives source, mask and starting noise without a second VAE
encoding. The studio's bit-identical waveform splice (``rework.repaint``) still follows.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

LATENT_CROSSFADE_FRAMES = 25  # conservative's blend, and balanced's at strength 0 (one second)
# Fields added after runs were saved, with the value that reproduces such a run: before official
# repaint, Edit and Extend re-imposed nothing and blended nothing, which is "aggressive".
SAVED_BEFORE: Mapping[str, Mapping[str, Any]] = types.MappingProxyType(
    {mode: types.MappingProxyType({"repaint_mode": "aggressive"}) for mode in ("edit", "extend")}
)


def with_saved_defaults(mode: Any, request: dict[str, Any]) -> dict[str, Any]:
    """A saved request with the fields it predates filled in as it was made (``SAVED_BEFORE``)."""
    missing = {name: value for name, value in SAVED_BEFORE.get(str(mode), {}).items() if name not in request}
    return {**request, **missing} if missing else request


@dataclass(frozen=True)
class RepaintConfig:
    injection_ratio: float  # share of the steps after which the source is re-imposed outside
    crossfade_frames: int  # latent frames of the blend on each side of the segment

    @property
    def changes_sampling(self) -> bool:
        return self.injection_ratio > 0 or self.crossfade_frames > 0


def repaint_config(mode: str, strength: float) -> RepaintConfig:
    """The numbers a repaint mode stands for (``_resolve_repaint_config``)."""
    strength = min(max(float(strength), 0.0), 1.0)
    if mode == "aggressive":
        return RepaintConfig(0.0, 0)
    if mode == "conservative":
        return RepaintConfig(1.0, LATENT_CROSSFADE_FRAMES)
    keep = 1.0 - strength
    return RepaintConfig(keep, round(LATENT_CROSSFADE_FRAMES * keep))  # Python's round, as official


def injection_steps(config: RepaintConfig, steps: int) -> list[int]:
    """The steps after which the source is re-imposed (0-based; the last step never)."""
    cutoff = round(config.injection_ratio * steps)
    return [step for step in range(steps - 1) if step < cutoff]


class RepaintInjection:
    """A ``backend.StepHook`` doing official repaint on one run; ``attach(pipe)`` readies it.

    ``attach`` watches the DiT's first call for the starting noise and the context latents and
    returns the function that stops watching; the hook then works from what it saw.
    """

    def __init__(self, config: RepaintConfig) -> None:
        self.config = config
        self._scheduler: Any = None
        self._noise: Any = None
        self._context: Any = None
        self.injected: list[int] = []  # the steps after which it re-imposed the source (for tests)

    def attach(self, pipe: Any) -> Callable[[], None]:
        self._scheduler, self._noise, self._context, self.injected = pipe.scheduler, None, None, []

        def first_call(module: Any, args: tuple, kwargs: dict) -> None:
            if self._context is None:
                self._noise = kwargs["hidden_states"].detach()
                self._context = kwargs["context_latents"].detach()

        handle = pipe.transformer.register_forward_pre_hook(first_call, with_kwargs=True)

        def detach() -> None:
            handle.remove()
            self._noise = self._context = None

        return detach

    def __call__(self, step: int, timestep: float, latents: Any) -> Any:
        import torch

        if self._context is None:
            raise RuntimeError("repaint: the step hook ran without attach(pipe)")
        takes, channels = latents.shape[0], latents.shape[-1]
        # Under guidance the DiT sees [cond, uncond]: the first `takes` rows are the run's own.
        context = self._context[:takes].to(latents.dtype)
        source, keep = context[..., :channels], context[..., channels] < 0.5  # keep: outside the segment
        sigmas = self._scheduler.sigmas
        steps = len(sigmas) - 1  # the scheduler appends the terminal 0
        if step in injection_steps(self.config, steps):
            t_next = float(sigmas[step + 1])
            noised = t_next * self._noise[:takes].to(latents.dtype) + (1.0 - t_next) * source
            latents = torch.where(keep.unsqueeze(-1), noised, latents)
            self.injected.append(step)
        if step == steps - 1 and self.config.crossfade_frames > 0:
            weight = soft_mask(~keep, self.config.crossfade_frames).to(latents.dtype).unsqueeze(-1)
            latents = weight * latents + (1.0 - weight) * source
        return latents


def soft_mask(segment: Any, frames: int) -> Any:
    """1 inside the segment, linear ramps over ``frames`` frames either side, 0 beyond
    (``_repaint_boundary_blend``): ``segment`` is bool ``[takes, T]``."""
    import torch

    soft = segment.float().clone()
    length = segment.shape[-1]
    for row, inside in zip(soft, segment, strict=True):
        where = torch.nonzero(inside).flatten()
        if where.numel() == 0 or where.numel() == length:
            continue
        left, right = int(where[0]), int(where[-1]) + 1
        fade_in = left - max(left - frames, 0)
        if fade_in:
            row[left - fade_in : left] = torch.linspace(0.0, 1.0, fade_in + 2)[1:-1]
        fade_out = min(right + frames, length) - right
        if fade_out:
            row[right : right + fade_out] = torch.linspace(1.0, 0.0, fade_out + 2)[1:-1]
    return soft
