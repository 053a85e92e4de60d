"""A request's sampling as pipeline calls: the official schedule, cover's condition switch, the per-step work.

``plan_sampling`` turns a validated, normalised request and the checkpoint variant into a
``SamplingPlan``; ``Backend.generate`` runs it (``run_plan``). A cover whose strength is below 1
runs as two pipeline calls on one schedule: the first ``int(steps · strength)`` steps with the
cover condition (``output_type="latent"``), the rest continuing from that latent with the
text-to-music condition (no source: the silence context), guided like the first. That is the
official switch (turbo/base ``generate_audio``: ``cover_steps``), where diffusers would instead
blend a cover and a non-cover velocity at every step (two DiT calls per step).

Residual difference, documented: APG's momentum restarts at the switch (one buffer per call).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sampling.schedule import Schedule, cover_start, cover_steps, plan_schedule
from sampling.stepper import Stepper

# A phase's kwargs set to this are left out of its pipeline call.
DROP = object()


@dataclass(frozen=True)
class Phase:
    """One pipeline call: its argument overrides and its first step's index in the run."""

    kwargs: dict[str, Any]
    first: int
    condition: str  # "cover" or "text2music": which condition its DiT calls get (for the record)
    steps: int

    @property
    def timesteps(self) -> tuple[float, ...]:
        return tuple(self.kwargs.get("timesteps", ()))

    def pipeline_next(self, step: int) -> float:
        """The timestep diffusers steps to after ``step`` of this call (0 after its last)."""
        return self.timesteps[step + 1] if step + 1 < len(self.timesteps) else 0.0


@dataclass
class SamplingPlan:
    schedule: Schedule
    phases: tuple[Phase, ...]
    stepper: Stepper
    # cover_noise_strength's start: the source latent re-noised at the first timestep (pipe, generators, kwargs).
    start: Callable[[Any, list, dict], Any] | None = None

    @classmethod
    def plain(cls, steps: int) -> SamplingPlan:
        """The pipeline's own loop as it is: one call, its own schedule, nothing done per step."""
        return cls(Schedule((), 0.0), (Phase({}, 0, "", steps),), Stepper((), ()))

    @property
    def steps(self) -> int:
        return sum(phase.steps for phase in self.phases)

    def record(self) -> dict[str, Any]:
        """What settings.json keeps of the sampling: the timesteps run, the calls, what was changed and why."""
        return {
            "timesteps": [round(t, 6) for phase in self.phases for t in phase.timesteps],
            "shift": self.schedule.shift,
            "calls": [{"condition": phase.condition, "steps": phase.steps} for phase in self.phases],
            "notes": list(self.schedule.notes),
        }


def plan_sampling(request, variant: str, kwargs: dict[str, Any], seeds: list[int]) -> SamplingPlan:
    """The plan for ``request`` (its ``pipeline_kwargs`` merged into ``kwargs``) on a ``variant`` checkpoint."""
    schedule = plan_schedule(variant, request.num_inference_steps, request.shift)
    timesteps = schedule.timesteps
    cover = kwargs.get("task_type") == "cover" and kwargs.get("src_audio") is not None
    start = None
    if cover:
        first = cover_start(timesteps, getattr(request, "cover_noise_strength", 0.0))
        timesteps = timesteps[first:]
        if first:
            start = _renoised_source(timesteps[0])
    switch = cover_steps(len(timesteps), request.audio_cover_strength) if cover else len(timesteps)
    phases = []
    if switch:
        extra: dict[str, Any] = {"audio_cover_strength": 1.0} if cover else {}
        condition = "cover" if cover else kwargs.get("task_type", "text2music")
        phases.append(Phase(_call(timesteps[:switch], extra), 0, condition, switch))
    if switch < len(timesteps):
        # The text-to-music condition: no source (silence context, no codes), the same text and timbre.
        extra = {"task_type": "text2music", "src_audio": DROP, "audio_codes": DROP, "audio_cover_strength": DROP}
        phases.append(Phase(_call(timesteps[switch:], extra), switch, "text2music", len(timesteps) - switch))
    guided = request.guidance_scale > 1.0 and variant != "turbo"
    stepper = Stepper(
        timesteps=timesteps,
        seeds=seeds,
        sde=request.infer_method == "sde",
        dcw=bool(request.dcw_enabled),
        adg_scale=request.guidance_scale if guided and request.guidance_method == "adg" else None,
    )
    return SamplingPlan(schedule, tuple(phases), stepper, start)


def _call(timesteps: tuple[float, ...], extra: dict[str, Any]) -> dict[str, Any]:
    return {"timesteps": list(timesteps), "num_inference_steps": len(timesteps), **extra}


def _renoised_source(t: float) -> Callable[[Any, list, dict], Any]:
    """Official cover_noise_strength start: ``t·noise + (1 - t)·source latent``, the noise each take's own."""

    def start(pipe, generators: list, kwargs: dict[str, Any]):
        device, dtype = pipe._execution_device, pipe.transformer.dtype
        audio = kwargs["src_audio"]
        audio = (audio.unsqueeze(0) if audio.dim() == 2 else audio).to(device=device, dtype=pipe.vae.dtype)
        # Drawn from the global RNG, which Backend.generate seeds again before the pipeline's own
        # encoding: both draws are the same, so this is the source latent the cover's context has.
        source = pipe.vae.encode(audio).latent_dist.sample().transpose(1, 2).to(dtype)
        noise = kwargs.get("latents")  # Vary's blended noise, when given
        if noise is None:
            frames = duration_for_frames(source.shape[1], pipe.latents_per_second)
            noise = pipe.prepare_latents(len(generators), frames, dtype, device, generator=generators)
        noise = noise.to(device=device, dtype=dtype)
        return t * noise + (1.0 - t) * source.expand(len(generators), -1, -1)

    return start


def duration_for_frames(frames: int, latents_per_second: float) -> float:
    """An ``audio_duration`` that the pipeline turns back into exactly ``frames`` latent frames."""
    duration = frames / latents_per_second
    while math.ceil(duration * latents_per_second) > frames:
        duration = math.nextafter(duration, 0.0)
    return duration


def run_plan(pipe, call_kwargs: dict[str, Any], generators: list, plan: SamplingPlan, on_step, reseed) -> Any:
    """Run ``plan``'s pipeline calls; returns the last call's audio (``output_type="pt"``).

    ``on_step(index, t, latents)`` runs after each step with the run-wide step index and returns
    the latents to go on from (cancel raises from it); ``reseed()`` seeds the global RNG for the
    pipeline's own source encoding.
    """
    latents = None
    if plan.start is not None:
        latents = plan.start(pipe, generators, call_kwargs)
        reseed()
    stepper = plan.stepper
    attached = stepper.attached(pipe) if stepper.active or len(plan.phases) > 1 else contextlib.nullcontext()
    output = None
    with attached:
        for number, phase in enumerate(plan.phases):
            kwargs = {**call_kwargs, **phase.kwargs}
            kwargs = {name: value for name, value in kwargs.items() if value is not DROP}
            if latents is not None:
                kwargs["latents"] = latents
                if number:
                    kwargs["audio_duration"] = duration_for_frames(latents.shape[1], pipe.latents_per_second)

            def callback(pipeline, step: int, t: float, tensors: dict, phase: Phase = phase) -> dict:
                index = phase.first + step
                stepped = stepper.step(index, float(t), phase.pipeline_next(step), tensors["latents"])
                return {"latents": on_step(index, float(t), stepped)}

            last = number == len(plan.phases) - 1
            output = pipe(
                **kwargs, generator=generators, callback_on_step_end=callback, output_type="pt" if last else "latent"
            )
            latents = output.audios
    return output.audios  # type: ignore[union-attr]  # at least one phase
