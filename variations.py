"""Vary: a new take near a saved one, its starting noise a blend of the parent's and fresh noise.

The blend is variance preserving: ``x = cos(v·π/2)·original + sin(v·π/2)·fresh``. Two
independent unit Gaussians mixed with weights whose squares sum to one are again a unit
Gaussian, so the DiT starts from noise of the kind it was trained on at every ``v``
(ACE-Step v1's pipeline mixed its retake noise the same way, ``add_retake_noise``). ``v = 0`` is the parent bit for bit,
``v = 1`` a fresh take with the new seed.

Reproducing the parent needs the very tensor the pipeline drew for it. The backend seeds
take *i* with ``torch.Generator("cpu").manual_seed(seed + i)`` and lets
``AceStepPipeline.prepare_latents`` draw ``[1, frames, channels]`` from it in the
transformer's dtype; ``initial_noise`` calls that same method with the same generator,
so the draw is the pipeline's own. The noise reaches the pipeline through its
``latents=`` argument (``vary_kwargs``).

Bit-for-bit holds on the same model and dtype (``settings.json`` records both), for runs
with source audio (Cover, Extend, Edit) too: the pipeline samples the VAE posterior of the
source from the global torch RNG, and ``Backend.generate`` seeds that RNG for every run
(with the parent's seed for a variation, ``rng_seed``).
"""

from __future__ import annotations

import dataclasses
import math
import random
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from typing_extensions import Self

from validation import MAX_BATCH, MAX_SEED, check_text_fields, coerce_into, echo

if TYPE_CHECKING:
    import torch

# ACE-Step v1's retake tab opened its variance slider at 0.2 (acestep/ui/components.py):
# a take that is recognisably the same song with different details.
DEFAULT_VARIANCE = 0.2


@dataclass(frozen=True)
class VaryRequest:
    """Vary the takes of a saved run; ``seed`` None picks a random one for the fresh noise."""

    parent_run_id: str = ""
    variance: float = DEFAULT_VARIANCE
    seed: int | None = None

    mode: typing.ClassVar[str] = "vary"

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Self:
        """Build a validated request from form, API or JSON values; unknown names are refused."""
        return coerce_into(cls, values)

    def validate(self) -> Self:
        check_text_fields(self)
        if not self.parent_run_id.strip():
            raise ValueError(f"parent_run_id: choose the run to vary, got {echo(self.parent_run_id)}")
        if isinstance(self.variance, bool) or not isinstance(self.variance, (int, float)):
            raise ValueError(f"variance: must be a number between 0 and 1, got {echo(self.variance)}")
        if not math.isfinite(self.variance) or not 0.0 <= self.variance <= 1.0:
            raise ValueError(
                f"variance: must be between 0 (the same take) and 1 (a fresh take), got {echo(self.variance)}"
            )
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise ValueError(
                f"seed: must be between 0 and {MAX_SEED} (or empty for a random seed), got {echo(self.seed)}"
            )
        return self

    def resolve_seed(self) -> Self:
        """A concrete seed for the fresh noise, so that the variation itself can be reproduced."""
        if self.seed is not None:
            return self
        # Leave room for one seed per take of a batch, as SongRequest.resolve_seed does.
        return dataclasses.replace(self, seed=random.randint(0, MAX_SEED - MAX_BATCH))


@dataclass(frozen=True)
class VaryPlan:
    """What a vary run needs from its parent's ``settings.json``."""

    mode: str  # the parent's mode: the request type to rebuild
    request: dict[str, Any]  # the parent's request values with the new seed in place
    parent_seeds: list[int]  # one per take, as the parent drew them
    seeds: list[int]  # the fresh noise's seed per take
    variance: float


def plan_variation(settings: Mapping[str, Any], request: VaryRequest, folder: Path | None = None) -> VaryPlan:
    """Read a parent run's ``settings.json`` and pair each of its takes with a fresh seed.

    ``request`` must have a resolved seed. The returned ``request`` values rebuild the
    parent's request (``REQUEST_TYPES[plan.mode].from_values``) with the new seed, so
    the variation's own ``settings.json`` names the seed its fresh noise came from. With
    the parent's run ``folder``, its input files point at the copies kept there, since
    the original uploads may be gone.
    """
    if request.seed is None:
        raise ValueError("seed: resolve the random seed before planning a variation")
    parent_seeds = [int(take["seed"]) for take in settings["takes"]]
    seeds = [(request.seed + i) % (MAX_SEED + 1) for i in range(len(parent_seeds))]
    values = {**settings["request"], "seed": request.seed}
    if folder is not None:
        values.update({field: str(folder / name) for field, name in settings.get("inputs", {}).items()})
    return VaryPlan(settings["mode"], values, parent_seeds, seeds, request.variance)


def latent_length(pipe, audio_duration: float, src_samples: int | None = None) -> int:
    """The number of latent frames the pipeline uses for a call.

    Text to music: ``ceil(audio_duration · frames per second)``, as ``__call__`` computes
    it. With source audio the VAE's encoding decides, and it keeps whole frames only:
    ``floor(samples / hop)`` (checked on the tiny VAE: 191,999 samples give 99 frames).
    """
    if src_samples is not None:
        hop = round(pipe.sample_rate / pipe.latents_per_second)
        return src_samples // hop
    return math.ceil(audio_duration * pipe.latents_per_second)


def initial_noise(
    pipe, audio_duration: float, seed: int | Sequence[int], src_samples: int | None = None
) -> torch.Tensor:
    """The starting noise the pipeline draws for ``seed`` (or one take per seed): ``[takes, frames, channels]``.

    It is the pipeline's own draw: ``prepare_latents`` with a CPU generator per take, on
    the pipeline's device and in the transformer's dtype, for the duration ``__call__``
    hands it (the frame count converted back to seconds).
    """
    import torch

    seeds = [seed] if isinstance(seed, int) else list(seed)
    frames = latent_length(pipe, audio_duration, src_samples)
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    return pipe.prepare_latents(
        batch_size=len(seeds),
        audio_duration=frames / pipe.latents_per_second,
        dtype=pipe.transformer.dtype,
        device=pipe._execution_device,
        generator=generators,
    )


def mix_noise(original: torch.Tensor, fresh: torch.Tensor, variance: float) -> torch.Tensor:
    """``cos(v·π/2)·original + sin(v·π/2)·fresh``, in float32, returned in ``original``'s dtype.

    The ends are exact: 0 returns ``original`` and 1 returns ``fresh`` unchanged (cos(π/2)
    is 6e-17 in floating point, not 0).
    """
    if original.shape != fresh.shape:
        raise ValueError(f"noise shapes differ: {tuple(original.shape)} vs {tuple(fresh.shape)}")
    if not 0.0 <= variance <= 1.0:
        raise ValueError(f"variance: must be between 0 and 1, got {variance!r}")
    if variance == 0.0:
        return original.clone()
    if variance == 1.0:
        return fresh.clone()
    angle = variance * math.pi / 2
    mixed = math.cos(angle) * original.float() + math.sin(angle) * fresh.float()
    return mixed.to(original.dtype)


def variation_latents(
    pipe,
    audio_duration: float,
    parent_seed: int | Sequence[int],
    new_seed: int | Sequence[int],
    variance: float,
    src_samples: int | None = None,
) -> torch.Tensor:
    """Starting noise for a variation: each parent take's noise mixed with its new seed's."""
    parents = [parent_seed] if isinstance(parent_seed, int) else list(parent_seed)
    fresh = [new_seed] if isinstance(new_seed, int) else list(new_seed)
    if len(parents) != len(fresh):
        raise ValueError(f"{len(parents)} parent seed(s) but {len(fresh)} new seed(s)")
    original = initial_noise(pipe, audio_duration, parents, src_samples)
    if variance == 0.0:
        return original
    return mix_noise(original, initial_noise(pipe, audio_duration, fresh, src_samples), variance)


def vary_kwargs(
    pipe,
    audio_duration: float,
    parent_seed: int | Sequence[int],
    new_seed: int | Sequence[int],
    variance: float,
    src_samples: int | None = None,
) -> dict[str, Any]:
    """The pipeline arguments a variation adds to its parent's call: ``{"latents": ...}``.

    Pass the parent's ``audio_duration`` and, for runs with source audio, the source's
    length in samples (its VAE encoding sets the frame count). The generators the
    backend still passes are then unused for the noise.
    """
    return {"latents": variation_latents(pipe, audio_duration, parent_seed, new_seed, variance, src_samples)}
