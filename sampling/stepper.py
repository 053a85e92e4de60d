"""Per-step sampling on diffusers' loop: SDE re-noising, DCW, ADG and steps that end where the schedule says.

diffusers' ``AceStepPipeline`` takes a plain Euler step after every DiT call. ``Stepper`` sees
each call's input latents (a forward pre-hook on the DiT) and each step's result (a
``Backend.generate`` step hook), which together give the step's velocity ``v`` and predicted
clean latent ``x0 = x - t·v``. From those it re-takes the step the official way:

- to the schedule's next timestep, which differs from the pipeline's where a run is split into
  pipeline calls (the last step of a call ends at t = 0 in diffusers);
- SDE (official ``infer_method="sde"``, turbo and base ``generate_audio``): ``x0`` re-noised to
  the next timestep, ``t'·noise + (1 - t')·x0``, the noise from a CPU generator per take seeded
  with the take's seed (after the draw that made its starting noise), so a seed reproduces it;
- DCW (``sampling.dcw``) after the step, against ``x0``.

ADG replaces APG with a forward hook on the DiT: on a guided call (conditional and null halves in
one batch) it returns the ADG velocity in both halves, so the pipeline's APG, given two equal
predictions, passes it through unchanged (its update is zero).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sampling.dcw import dcw_correct
from sampling.guidance import adg_velocity


@dataclass
class Stepper:
    """One run's per-step state across its pipeline calls. ``timesteps`` is the whole run's schedule."""

    timesteps: tuple[float, ...]
    seeds: Sequence[int]
    sde: bool = False
    dcw: bool = False
    adg_scale: float | None = None  # guidance scale when ADG replaces APG
    _inputs: Any = field(default=None, repr=False)  # the latents the last DiT call started from
    _noise: list[Any] = field(default_factory=list, repr=False)

    @property
    def active(self) -> bool:
        return self.sde or self.dcw or self.adg_scale is not None

    @contextlib.contextmanager
    def attached(self, pipe) -> Iterator[None]:
        """The DiT hooks in place for the block (taken off again, even on an error)."""
        handles = [pipe.transformer.register_forward_pre_hook(self._record, with_kwargs=True)]
        if self.adg_scale is not None:
            handles.append(pipe.transformer.register_forward_hook(self._adg, with_kwargs=True))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _record(self, module, args, kwargs) -> None:
        self._inputs = kwargs["hidden_states"][: len(self.seeds)]

    def _adg(self, module, args, kwargs, output):
        hidden = kwargs["hidden_states"]
        takes = len(self.seeds)
        if hidden.shape[0] != 2 * takes:
            return output  # an unguided call
        cond, null = output[0].chunk(2)
        t = float(kwargs["timestep"][0])
        guided = adg_velocity(hidden[:takes], cond, null, t, self.adg_scale or 1.0)
        import torch

        return (torch.cat([guided, guided]), *output[1:])

    def step(self, index: int, t: float, pipeline_next: float, latents):
        """The latents after step ``index`` (at ``t``; the pipeline went to ``pipeline_next``), re-taken officially."""
        t_next = self.timesteps[index + 1] if index + 1 < len(self.timesteps) else 0.0
        x = self._inputs
        if x is None or (not self.active and t_next == pipeline_next):
            return latents
        velocity = (x.float() - latents.float()) / (t - pipeline_next)
        denoised = x.float() - t * velocity
        if self.sde and t_next > 0.0:
            stepped = t_next * self._draw(latents) + (1.0 - t_next) * denoised
        elif t_next == pipeline_next:
            stepped = latents.float()
        else:
            stepped = x.float() - (t - t_next) * velocity
        if self.dcw:
            stepped = dcw_correct(stepped, denoised, t)
        return stepped.to(latents.dtype)

    def _draw(self, like):
        import torch

        if not self._noise:
            shape = (1, *like.shape[1:])
            for seed in self.seeds:
                generator = torch.Generator("cpu").manual_seed(seed)
                torch.randn(shape, generator=generator)  # the draw that made this take's starting noise
                self._noise.append(generator)
        shape = (1, *like.shape[1:])
        noise = [torch.randn(shape, generator=generator) for generator in self._noise]
        return torch.cat(noise).to(device=like.device, dtype=torch.float32)
