"""FlowEdit: change a song by describing it twice, with no inversion and no repaint mask.

Kulikov et al., "FlowEdit: Inversion-Free Text-Based Editing Using Pre-Trained Flow
Models" (2024), Algorithm 1, on ACE-Step 1.5's DiT. Times follow the pipeline: data at
t = 0, noise at t = 1, ``x_t = (1 - t)·x0 + t·noise``. The DiT predicts the velocity
``v = noise - x0`` (d x_t / dt), and the pipeline's Euler step from ``t`` to ``t' < t`` is
``x + (t' - t)·v`` (``FlowMatchEulerDiscreteScheduler.step``), so one update rule serves
the edit and the plain sampling below.

With ``x_src`` the source song's VAE latent and ``t_0 > t_1 > … > t_N = 0`` the
pipeline's shifted schedule (paper step ``i`` is pipeline step ``N - i``):

1. ``z_edit = x_src``; the first ``N - n_max`` steps are skipped.
2. For each step from paper step ``n_max`` down to ``n_min + 1``, average over ``n_avg``
   draws of noise ``n``: ``z_src = (1 - t)·x_src + t·n``; ``z_tar = z_edit + z_src - x_src``;
   ``dV += (v(z_tar, target) - v(z_src, source)) / n_avg``. Then
   ``z_edit += (t_next - t)·dV``. On a time segment, ``dV`` is zero outside it.
3. For the last ``n_min`` steps the paper samples normally: ``z = z_edit + z_src - x_src``
   at ``t_{n_min}`` with fresh noise, then plain Euler steps on the target velocity (outside
   a segment the frames follow the source's own noisy path back to ``x_src``).
4. The VAE decodes ``z_edit``; a segment is spliced into the source as Edit does.

``v`` is the DiT called the way ``AceStepPipeline.__call__`` calls it for text to music:
the caption and lyrics through ``encode_prompt`` and the condition encoder (timbre: the
learned silence latent, as with no reference audio), silence-latent context with an
all-ones chunk mask. Guidance uses the pipeline's own APG (``normalized_guidance``,
learned null condition, norm threshold 2.5, eta 0) without its momentum buffer: momentum
averages the guidance of consecutive points on one trajectory, and FlowEdit evaluates a
freshly noised point at every step.

Defaults, and where they come from:

- ``n_max``: the paper's SD3 setting edits the last 33 of T = 50 steps. SD3 and ACE-Step
  both use a shift-3 schedule, so the same fraction (0.66) starts the edit at nearly the
  same noise level: 5 of turbo's 8 steps start at t = 0.83 (SD3's: t = 0.85).
- ``n_min = 0`` and ``n_avg = 1``: the paper's settings for both SD3 and FLUX.
- Guidance: the paper uses source 3.5 / target 13.5 with SD3, whose usual guidance is 7.0;
  ACE-Step base/sft are also run at 7.0 (checkpoints.SAMPLER_DEFAULTS), so those two
  values carry over (``guidance_defaults``). Turbo is guidance-distilled: 1.0 / 1.0, and
  the pipeline's rule applies (no guidance on turbo whatever the scale).
- Steps and shift: the checkpoint's own (turbo 8 steps, shift 3.0), like every mode.

The source is encoded to its posterior mean (deterministic: the same request gives the
same edit). With identical source and target conditions ``dV`` is exactly zero and the
result is the source's VAE round trip.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from audio_io import SAMPLE_RATE, fit_length
from backend import RunControl
from modes import FlowEditRequest, SongRequest
from rework import repaint
from sampling.schedule import guided as guided_at
from validation import RANDOM_SEED

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# The paper's SD3 guidance (source 3.5, target 13.5), for checkpoints run with guidance.
PAPER_SOURCE_GUIDANCE = 3.5
PAPER_TARGET_GUIDANCE = 13.5
# APG as AceStepPipeline.__call__ runs it (diffusers 0.42.1, after the official base model).
APG_NORM_THRESHOLD = 2.5
APG_ETA = 0.0
TIMBRE_S = 30  # the condition encoder's timbre input: 30 s of silence latent without a reference


def guidance_defaults(variant: str) -> dict[str, float]:
    """The guidance pair for a checkpoint variant: none on turbo, the paper's elsewhere."""
    if variant == "turbo":
        return {"source_guidance_scale": 1.0, "guidance_scale": 1.0}
    return {"source_guidance_scale": PAPER_SOURCE_GUIDANCE, "guidance_scale": PAPER_TARGET_GUIDANCE}


@dataclass(frozen=True)
class Condition:
    """One text condition as the DiT's cross-attention sees it, with its guidance."""

    hidden_states: torch.Tensor  # [1, tokens, hidden] from the condition encoder
    null_hidden_states: torch.Tensor | None  # the learned null condition, when guided
    guidance_scale: float

    @property
    def guided(self) -> bool:
        return self.null_hidden_states is not None


def flow_edit(pipe, request: FlowEditRequest, source_audio: np.ndarray, control: RunControl) -> np.ndarray:
    """Edit ``source_audio`` (float32 ``[2, samples]`` at 48 kHz); returns the take, same shape.

    ``request`` needs a resolved seed; a batch is one call per ``take_seeds()`` seed. The
    caller holds the pipeline (the backend's run lock). Raises ``ValueError`` before any
    model time and ``Cancelled`` within one DiT call of ``control.cancel()``.
    """
    import torch

    request.validate()
    if request.seed == RANDOM_SEED:
        raise ValueError("seed: resolve the random seed before editing")
    audio = np.ascontiguousarray(source_audio, dtype=np.float32)
    if audio.ndim != 2 or audio.shape[0] != 2:
        raise ValueError(f"src_audio: expected stereo audio [2, samples], got shape {audio.shape}")
    samples = audio.shape[-1]
    duration_s = samples / SAMPLE_RATE
    request.check_source(duration_s)
    control.check()
    control.report(0.02, "Encoding source audio…")
    with torch.no_grad():
        x_src = encode_audio(pipe, audio)
        source = encode_condition(
            pipe, request.source_prompt, request.source_lyrics, request, duration_s, request.source_guidance_scale
        )
        if (request.prompt, request.lyrics, request.guidance_scale) == (
            request.source_prompt,
            request.source_lyrics,
            request.source_guidance_scale,
        ):
            target = source
        else:
            target = encode_condition(pipe, request.prompt, request.lyrics, request, duration_s, request.guidance_scale)
        mask = segment_mask(pipe, request, x_src.shape[1]) if request.repainting_end is not None else None
        z_edit = edit_latents(pipe, x_src, source, target, request, control, mask)
        control.check()
        control.report(0.9, "Decoding audio…")
        take = decode_latents(pipe, z_edit, samples)
    control.check()
    if request.repainting_end is None:
        return take
    start = round(request.repainting_start * SAMPLE_RATE)
    end = min(round(request.repainting_end * SAMPLE_RATE), samples)
    # Edit's own finish: level-matched to the source, spliced with equal-power crossfades.
    return repaint(audio, start, end).finish(take)


def encode_audio(pipe, audio: np.ndarray) -> torch.Tensor:
    """The VAE posterior mean of ``[2, samples]`` audio as ``[1, frames, channels]`` float32.

    The audio is zero-padded to whole latent frames so that its last partial frame is
    encoded too (the VAE keeps whole frames only).
    """
    import torch

    hop = round(pipe.sample_rate / pipe.latents_per_second)
    frames = math.ceil(audio.shape[-1] / hop)
    padded = torch.from_numpy(np.ascontiguousarray(fit_length(audio, frames * hop), dtype=np.float32))
    batch = padded[None].to(device=pipe._execution_device, dtype=pipe.vae.dtype)
    return pipe.vae.encode(batch).latent_dist.mode().transpose(1, 2).float()


def decode_latents(pipe, latents: torch.Tensor, samples: int) -> np.ndarray:
    """Decode ``[1, frames, channels]`` to float32 ``[2, samples]``.

    Only the pipeline's anti-clip step (divide by the peak when it exceeds 1) is applied,
    not its -1 dBFS normalisation: an edit keeps the source's level.
    """
    audio = pipe.vae.decode(latents.transpose(1, 2).to(pipe.vae.dtype)).sample[0].float()
    peak = float(audio.abs().max())
    if peak > 1.0:
        audio = audio / peak
    return fit_length(audio.cpu().numpy(), samples)


def encode_condition(
    pipe, prompt: str, lyrics: str, request: SongRequest, audio_duration: float, guidance_scale: float
) -> Condition:
    """Caption and lyrics through the text encoder and the condition encoder, as ``__call__`` does."""
    device = pipe._execution_device
    text, text_mask, lyric, lyric_mask = pipe.encode_prompt(
        prompt=[prompt],
        lyrics=[lyrics],
        device=device,
        vocal_language=request.vocal_language,
        audio_duration=audio_duration,
        bpm=request.bpm,
        keyscale=request.keyscale or None,
        timesignature=request.timesignature or None,
    )
    hidden = silent_timbre_condition(pipe, text, text_mask, lyric, lyric_mask)
    null = None
    if guidance_scale > 1.0:
        if pipe.is_turbo:
            # The pipeline's rule: turbo has guidance distilled into its weights.
            log.warning("Guidance %g is ignored on a turbo (guidance-distilled) checkpoint", guidance_scale)
        else:
            emb = getattr(pipe.condition_encoder, "null_condition_emb", None)
            if emb is None:
                raise ValueError("guidance_scale: this checkpoint has no null condition for guidance; use 1.0")
            null = emb.to(device=hidden.device, dtype=hidden.dtype).expand_as(hidden)
    return Condition(hidden, null, guidance_scale)


def silent_timbre_condition(pipe, text, text_mask, lyric, lyric_mask) -> torch.Tensor:
    """The condition encoder's output for encoded caption and lyrics with no timbre reference: its
    timbre input is ``TIMBRE_S`` of the silence latent, as the pipeline gives it without one."""
    import torch

    device, dtype = text.device, pipe.transformer.dtype
    timbre_frames = math.ceil(TIMBRE_S * pipe.latents_per_second)
    timbre = pipe.condition_encoder.silence_latent[:, :timbre_frames, :].to(device=device, dtype=dtype)
    hidden, _ = pipe.condition_encoder(
        text_hidden_states=text,
        text_attention_mask=text_mask,
        lyric_hidden_states=lyric,
        lyric_attention_mask=lyric_mask,
        refer_audio_acoustic_hidden_states_packed=timbre,
        refer_audio_order_mask=torch.arange(1, device=device, dtype=torch.long),
    )
    return hidden


def segment_mask(pipe, request: FlowEditRequest, frames: int) -> torch.Tensor:
    """``[1, frames, channels]``: 1 on the latent frames of the segment, 0 elsewhere (repaint's frame rule)."""
    import torch

    return pipe._build_chunk_mask(
        task_type="repaint",
        latent_length=frames,
        batch_size=1,
        device=pipe._execution_device,
        dtype=torch.float32,
        acoustic_dim=pipe.transformer.config.audio_acoustic_hidden_dim,
        repainting_start=request.repainting_start,
        repainting_end=request.repainting_end,
        has_src_audio=True,
    )


def velocity(
    pipe,
    latents: torch.Tensor,
    t: torch.Tensor,
    condition: Condition,
    context: torch.Tensor,
    cfg_interval: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """The DiT's velocity (noise - x0) at time ``t`` under ``condition``, float32, guided as the pipeline guides."""
    import torch
    from diffusers.guiders.adaptive_projected_guidance import normalized_guidance

    dtype = pipe.transformer.dtype
    hidden = latents.to(dtype)
    timestep = torch.full((latents.shape[0],), float(t), device=latents.device, dtype=dtype)
    # The official rule (sampling.schedule.guided): guided while t itself lies in the interval.
    guided = condition.guided and guided_at(float(t), *cfg_interval)
    if not guided:
        output = pipe.transformer(
            hidden_states=hidden,
            timestep=timestep,
            timestep_r=timestep,
            encoder_hidden_states=condition.hidden_states,
            context_latents=context,
            return_dict=False,
        )
        return output[0].float()
    # Conditional and null in one batch, as the pipeline runs guidance.
    output = pipe.transformer(
        hidden_states=torch.cat([hidden, hidden]),
        timestep=torch.cat([timestep, timestep]),
        timestep_r=torch.cat([timestep, timestep]),
        encoder_hidden_states=torch.cat([condition.hidden_states, condition.null_hidden_states]),
        context_latents=torch.cat([context, context]),
        return_dict=False,
    )
    conditional, unconditional = output[0].chunk(2)
    guided_velocity = normalized_guidance(
        pred_cond=conditional,
        pred_uncond=unconditional,
        guidance_scale=condition.guidance_scale - 1.0,
        momentum_buffer=None,
        eta=APG_ETA,
        norm_threshold=APG_NORM_THRESHOLD,
        use_original_formulation=True,
        norm_dim=(1,),
    )
    return guided_velocity.float()


def text_to_music_context(pipe, frames: int) -> torch.Tensor:
    """The DiT's context for text to music: the tiled silence latent and an all-ones chunk mask."""
    import torch

    device, dtype = pipe._execution_device, pipe.transformer.dtype
    silence, _ = pipe.prepare_src_latents(device=device, dtype=dtype, batch_size=1, latent_length=frames)
    chunk_mask = pipe._build_chunk_mask(
        task_type="text2music",
        latent_length=frames,
        batch_size=1,
        device=device,
        dtype=dtype,
        acoustic_dim=pipe.transformer.config.audio_acoustic_hidden_dim,
    )
    return torch.cat([silence, chunk_mask], dim=-1)


def edit_latents(
    pipe,
    x_src: torch.Tensor,
    source: Condition,
    target: Condition,
    request: FlowEditRequest,
    control: RunControl,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """FlowEdit in latent space (module docstring, steps 1-3): ``x_src`` ``[1, frames, channels]`` to the edit.

    Noise comes from one CPU generator seeded with ``request.seed``, drawn as the
    pipeline draws its starting noise, in order: ``n_avg`` draws per edit step, then one
    for the ``n_min`` phase.
    """
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    steps = request.num_inference_steps
    schedule = pipe._get_timestep_schedule(
        num_inference_steps=steps, shift=request.shift, device=x_src.device, dtype=torch.float32
    )
    times = torch.cat([schedule, schedule.new_zeros(1)])  # the scheduler's terminal t = 0
    first_edit = steps - request.edit_steps
    first_plain = steps - request.n_min
    context = text_to_music_context(pipe, x_src.shape[1])
    interval = (request.cfg_interval_start, request.cfg_interval_end)
    generator = torch.Generator("cpu").manual_seed(request.seed)
    calls = 2 * request.n_avg * (first_plain - first_edit) + (steps - first_plain)
    done = 0

    def draw() -> torch.Tensor:
        shape = tuple(x_src.shape)
        return randn_tensor(shape, generator=generator, device=x_src.device, dtype=pipe.transformer.dtype).float()

    def evaluate(latents: torch.Tensor, t: torch.Tensor, condition: Condition, label: str) -> torch.Tensor:
        nonlocal done
        control.check()
        v = velocity(pipe, latents, t, condition, context, interval)
        done += 1
        control.report(0.05 + 0.85 * done / calls, label)
        return v

    z_edit = x_src.clone()
    for k in range(first_edit, first_plain):
        t, dt = times[k], times[k + 1] - times[k]
        label = f"FlowEdit step {k - first_edit + 1}/{steps - first_edit}"
        delta = torch.zeros_like(x_src)
        for _ in range(request.n_avg):
            z_src = (1 - t) * x_src + t * draw()
            # z_edit + z_src - x_src, summed so that an unchanged z_edit gives z_src exactly.
            z_tar = z_src + (z_edit - x_src)
            v_tar = evaluate(z_tar, t, target, label)
            v_src = evaluate(z_src, t, source, label)
            delta += (v_tar - v_src) / request.n_avg
        if mask is not None:
            delta = delta * mask
        z_edit = z_edit + dt * delta
        control.steps_done = k - first_edit + 1
    if first_plain == steps:
        return z_edit

    noise = draw()
    t = times[first_plain]
    z = (1 - t) * x_src + t * noise + (z_edit - x_src)
    for k in range(first_plain, steps):
        t, t_next = times[k], times[k + 1]
        v = evaluate(z, t, target, f"Denoising step {k - first_edit + 1}/{steps - first_edit}")
        z = z + (t_next - t) * v
        if mask is not None:
            # Outside the segment, the source's own noisy path: x_src again at t = 0.
            z = torch.where(mask > 0.5, z, (1 - t_next) * x_src + t_next * noise)
        control.steps_done = k - first_edit + 1
    return z
