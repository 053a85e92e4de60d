"""Timestep schedules, the guidance interval and cover's condition switch, as the official code has them.

Times follow the pipeline: noise at t = 1, data at t = 0.

- Turbo: ``AceStepConditionGenerationModel.generate_audio`` in the official
  ``acestep/models/turbo/modeling_acestep_v15_turbo.py`` ignores the step count and runs a
  fixed 8-step table for shift 1, 2 or 3 (``SHIFT_TIMESTEPS``), the shift snapped to the
  nearest of the three; custom timesteps are mapped to the nearest of the tables' values
  (``VALID_TIMESTEPS``). The values below were read from that function.
- Base/SFT: ``t = shift·s / (1 + (shift-1)·s)`` on ``s = linspace(1, 0, N+1)`` without the
  terminal 0 (official base ``generate_audio``; diffusers ``_get_timestep_schedule``).
- Guidance interval: official guides while ``cfg_interval_start <= t <= cfg_interval_end``
  (base ``generate_audio``: ``apply_cfg_guidance``; MLX ``dit_generate._apply_cfg``);
  diffusers tests ``1 - t``, so the studio hands it the mirrored interval.
- Cover: the first ``int(steps · audio_cover_strength)`` steps use the cover condition, the
  rest the text-to-music one (turbo and base ``generate_audio``: ``cover_steps``);
  ``cover_noise_strength`` starts the run at the table timestep nearest ``1 - strength`` from
  the source latent re-noised there, and counts the steps from there.
"""

from __future__ import annotations

from dataclasses import dataclass

TURBO_STEPS = 8
TURBO_SHIFTS = (1.0, 2.0, 3.0)
# Official SHIFT_TIMESTEPS (turbo generate_audio), fix_nfe = 8, without the terminal 0.
TURBO_TIMESTEPS: dict[float, tuple[float, ...]] = {
    1.0: (1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125),
    2.0: (1.0, 14 / 15, 6 / 7, 10 / 13, 2 / 3, 6 / 11, 0.4, 2 / 9),
    3.0: (1.0, 21 / 22, 0.9, 5 / 6, 0.75, 9 / 14, 0.5, 0.3),
}
# Every timestep turbo was distilled on (official VALID_TIMESTEPS: the tables' 20 distinct values).
TURBO_VALID_TIMESTEPS: tuple[float, ...] = tuple(sorted({t for table in TURBO_TIMESTEPS.values() for t in table}))


@dataclass(frozen=True)
class Schedule:
    """The timesteps a run takes, and what the studio changed from the request to get them (in words)."""

    timesteps: tuple[float, ...]
    shift: float
    notes: tuple[str, ...] = ()


def shifted(steps: int, shift: float) -> tuple[float, ...]:
    """The base/SFT schedule, computed in float32 exactly as diffusers computes it (same bits)."""
    import torch

    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float32)
    if shift != 1.0:
        t = shift * t / (1 + (shift - 1) * t)
    return tuple(t[:-1].tolist())


def snap_turbo_shift(shift: float) -> float:
    """The official snap: the nearest of 1, 2, 3 (the lower one on a tie, as ``min`` picks)."""
    return min(TURBO_SHIFTS, key=lambda valid: abs(valid - shift))


def turbo_schedule(steps: int, shift: float) -> Schedule:
    """Turbo's schedule: the official 8-step table, or for another step count the shifted schedule
    mapped onto the timesteps turbo was distilled on (repeats dropped), with the reason in ``notes``."""
    snapped = snap_turbo_shift(shift)
    notes = []
    if snapped != shift:
        notes.append(
            f"shift {shift:g} ran as {snapped:g}: turbo was distilled on shifts 1, 2 and 3 only "
            "(the official studio snaps it the same way)"
        )
    if steps == TURBO_STEPS:
        return Schedule(TURBO_TIMESTEPS[snapped], snapped, tuple(notes))
    mapped: list[float] = []
    for t in shifted(steps, snapped):
        nearest = min(TURBO_VALID_TIMESTEPS, key=lambda valid: abs(valid - t))
        if not mapped or mapped[-1] != nearest:
            mapped.append(nearest)
    notes.append(
        f"{steps} steps ran as {len(mapped)} on the timesteps turbo was distilled on "
        f"(turbo is made for {TURBO_STEPS}: its official schedule has {TURBO_STEPS} steps)"
    )
    return Schedule(tuple(mapped), snapped, tuple(notes))


def plan_schedule(variant: str, steps: int, shift: float) -> Schedule:
    if variant == "turbo":
        return turbo_schedule(steps, shift)
    return Schedule(shifted(steps, shift), shift)


# Timesteps reach the DiT as float32 (0.9 arrives as 0.89999998); the official code compares its
# float64 table values. Widening the interval by this much keeps a typed boundary (0.9) inclusive.
INTERVAL_TOLERANCE = 1e-6


def pipeline_cfg_interval(start: float, end: float) -> dict[str, float]:
    """The pipeline's interval arguments: diffusers tests ``1 - t``; this mirror guides while ``start <= t <= end``."""
    return {
        "cfg_interval_start": max(0.0, 1.0 - end - INTERVAL_TOLERANCE),
        "cfg_interval_end": min(1.0, 1.0 - start + INTERVAL_TOLERANCE),
    }


def guided(t: float, start: float, end: float) -> bool:
    """Whether the official code guides the step at ``t`` (``t`` as float32 carries it)."""
    return start - INTERVAL_TOLERANCE <= t <= end + INTERVAL_TOLERANCE


def cover_steps(steps: int, strength: float) -> int:
    """How many of ``steps`` run on the cover condition (official ``int(num_steps * audio_cover_strength)``)."""
    return int(steps * strength)


def cover_start(timesteps: tuple[float, ...], noise_strength: float) -> int:
    """Index of the step a cover starts at: the timestep nearest ``1 - cover_noise_strength`` (0 when 0)."""
    if noise_strength <= 0.0:
        return 0
    level = 1.0 - noise_strength
    nearest = min(timesteps, key=lambda t: abs(t - level))
    return timesteps.index(nearest)
