"""Training an adapter on prepared clips, as the official trainer does (read, not copied):
``acestep/training/trainer.py`` ``PreprocessedLoRAModule.training_step`` (flow matching: noise x1,
data x0, ``x_t = t·x1 + (1-t)·x0``, the DiT predicts ``x1 - x0``, MSE in float32), the timestep drawn
uniformly from the turbo shift-3 eight-step table (``sample_discrete_timestep``), AdamW on the adapter
alone with a linear warm-up (from 0.1x, capped at a tenth of the run) into a cosine decay to 1% of
the rate (``_train_basic``), gradient clipping at 1.0; defaults from ``configs.py`` (``LoRAConfig``,
``TrainingConfig``). float32 on the CPU; bf16 autocast and gradient checkpointing on CUDA.

Resume equals an uninterrupted run: a checkpoint holds the adapter, AdamW's and the scheduler's
state and every RNG (the noise generator, the global one dropout draws from); each epoch's order is a
function of the seed and the epoch, so a resumed run sees the same batches with the same noise.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend import Cancelled, RunControl
from training import adapter
from training.prepare import PreparedClip

TURBO_SHIFT = 3.0
TURBO_STEPS = 8
CHECKPOINT_DIR = "checkpoint"
STATE_NAME = "state.pt"


def turbo_training_timesteps(shift: float = TURBO_SHIFT, steps: int = TURBO_STEPS) -> tuple[float, ...]:
    """The turbo schedule's timesteps, t = shift·s / (1 + (shift-1)·s) for s = 1, 1-1/8, ... 1/8."""
    grid = [1.0 - i / steps for i in range(steps)]
    return tuple(shift * s / (1.0 + (shift - 1.0) * s) for s in grid)


@dataclass(frozen=True)
class TrainSettings:
    """Defaults are the official trainer's (``configs.py``): r 8, alpha 16, dropout 0.1, lr 1e-4,
    weight decay 0.01, clip 1.0, warm-up 100 steps, 4 clips per optimiser step, 100 epochs, seed 42."""

    adapter: str = "lora"
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.1
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    warmup_steps: int = 100
    gradient_accumulation: int = 4
    epochs: int = 100
    steps: int | None = None  # optimiser steps; None: the epochs' worth
    save_every: int = 50  # steps between checkpoints (Stop also saves one)
    seed: int = 42

    def validate(self) -> None:
        if self.adapter not in adapter.ADAPTER_KINDS:
            raise ValueError(f"adapter: one of {', '.join(adapter.ADAPTER_KINDS)}, got {self.adapter!r}")
        for name, low, high in (
            ("rank", 1, 256),
            ("alpha", 1, 10_000),
            ("gradient_accumulation", 1, 64),
            ("epochs", 1, 10_000),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{_words(name)}: a whole number from {low:,} to {high:,}, got {value!r}")
        if self.steps is not None and not (isinstance(self.steps, int) and 1 <= self.steps <= 1_000_000):
            raise ValueError(f"Steps: a whole number from 1 to 1,000,000, got {self.steps!r}")
        if not 0 < self.learning_rate <= 1:
            raise ValueError(f"Learning rate: above 0 and at most 1, got {self.learning_rate:g}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"Dropout: from 0 up to (not including) 1, got {self.dropout:g}")
        if self.save_every < 1 or self.warmup_steps < 0 or self.max_grad_norm <= 0 or self.weight_decay < 0:
            raise ValueError("save_every at least 1, warmup_steps and weight_decay at least 0, max_grad_norm above 0")

    def total_steps(self, clips: int) -> int:
        return self.steps if self.steps is not None else self.epochs * math.ceil(clips / self.gradient_accumulation)


@dataclass(frozen=True)
class StepReport:
    step: int
    total: int
    loss: float
    learning_rate: float
    steps_per_s: float
    eta_s: float


@dataclass
class TrainResult:
    step: int
    total: int
    stopped: bool
    losses: list[float] = field(default_factory=list)  # per optimiser step, from step 1 (resumes included)
    adapter_dir: Path | None = None  # the saved adapter (None when stopped)
    checkpoint: Path | None = None


def batches(clips: int, settings: TrainSettings, start: int = 0) -> Iterator[list[int]]:
    """The clip indices of each optimiser step from step ``start``: each epoch a seeded shuffle, cut
    into groups of ``gradient_accumulation`` (a short last group, as the official loop steps at an
    epoch's end)."""
    import torch

    step, epoch = 0, 0
    while True:
        order = torch.randperm(clips, generator=torch.Generator().manual_seed(settings.seed * 100_003 + epoch))
        for first in range(0, clips, settings.gradient_accumulation):
            if step >= start:
                yield order[first : first + settings.gradient_accumulation].tolist()
            step += 1
        epoch += 1


def flow_loss(model, clip: PreparedClip, t: Any, noise: Any, device, autocast: bool) -> Any:
    """The flow-matching loss on one clip at timestep ``t`` with starting noise ``noise``."""
    import contextlib

    import torch
    import torch.nn.functional as F

    x0 = clip.tensors["target_latents"].to(device)[None]
    x1 = noise.to(device)
    t = t.to(device)
    xt = t[:, None, None] * x1 + (1.0 - t[:, None, None]) * x0
    context = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with context:
        velocity = model(
            hidden_states=xt,
            timestep=t,
            timestep_r=t,
            encoder_hidden_states=clip.tensors["encoder_hidden_states"].to(device)[None],
            context_latents=clip.tensors["context_latents"].to(device)[None],
            return_dict=False,
        )[0]
    return F.mse_loss(velocity.float(), (x1 - x0).float())


def evaluation_loss(model, clips: Sequence[PreparedClip], seed: int = 0, max_clips: int = 8) -> float:
    """The loss at every table timestep with fixed noise, dropout off: a steady measure of how well
    the model fits the clips (the training loss jumps with each step's timestep)."""
    import torch

    device = next(model.parameters()).device
    timesteps = turbo_training_timesteps()
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    total = 0.0
    with torch.no_grad():
        for clip in clips[:max_clips]:
            for t in timesteps:
                noise = torch.randn(clip.tensors["target_latents"][None].shape, generator=generator)
                total += float(flow_loss(model, clip, torch.tensor([t]), noise, device, device.type == "cuda"))
    model.train(was_training)
    return total / (len(clips[:max_clips]) * len(timesteps))


def _optimiser(model, settings: TrainSettings, total: int, device):
    import torch
    from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts, LinearLR, SequentialLR

    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    warmup = min(settings.warmup_steps, max(1, total // 10))
    scheduler = SequentialLR(
        optimiser,
        [
            LinearLR(optimiser, start_factor=0.1, end_factor=1.0, total_iters=warmup),
            CosineAnnealingWarmRestarts(optimiser, T_0=max(1, total - warmup), eta_min=settings.learning_rate * 0.01),
        ],
        milestones=[warmup],
    )
    return params, optimiser, scheduler


def _save_checkpoint(folder: Path, model, optimiser, scheduler, noise, state: dict) -> Path:
    import os
    import shutil
    import tempfile

    import torch
    from safetensors.torch import save_file

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".checkpoint-", dir=folder.parent))
    save_file(adapter.adapter_state(model), str(staging / "adapter.safetensors"))
    rng = {"noise": noise.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save({**state, "optimiser": optimiser.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng},
               staging / STATE_NAME)  # fmt: skip
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(staging, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def _load_checkpoint(folder: Path, model, optimiser, scheduler, noise, expected: dict) -> dict:
    import torch
    from safetensors.torch import load_file

    state = torch.load(folder / STATE_NAME, weights_only=True, map_location="cpu")
    for name in ("settings", "clips"):
        if state[name] != expected[name]:
            raise ValueError(
                f"checkpoint: {folder} was made with other {name}; train into a new folder or start afresh"
            )
    adapter.load_adapter_state(model, load_file(str(folder / "adapter.safetensors")))
    optimiser.load_state_dict(state["optimiser"])
    scheduler.load_state_dict(state["scheduler"])
    noise.set_state(state["rng"]["noise"])
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return state


def _optimiser_step(model, group: Sequence[PreparedClip], noise, params, optimiser, settings: TrainSettings) -> float:
    """One optimiser step over ``group`` (gradients accumulated): each clip its own table timestep
    and noise, both drawn from ``noise``. Returns the step's mean loss."""
    import torch

    device = next(model.parameters()).device
    timesteps = torch.tensor(turbo_training_timesteps())
    optimiser.zero_grad(set_to_none=True)
    loss_sum = 0.0
    for clip in group:
        t = timesteps[torch.randint(0, len(timesteps), (1,), generator=noise)]
        x1 = torch.randn(clip.tensors["target_latents"][None].shape, generator=noise)
        loss = flow_loss(model, clip, t, x1, device, device.type == "cuda") / len(group)
        loss.backward()
        loss_sum += float(loss.detach())
    torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
    optimiser.step()
    return loss_sum


def train(
    transformer,
    clips: Sequence[PreparedClip],
    settings: TrainSettings,
    out_dir: Path,
    control: RunControl | None = None,
    on_step: Callable[[StepReport], None] | None = None,
    resume: bool = True,
    extra: dict | None = None,
) -> TrainResult:
    """Train an adapter on ``transformer`` (wrapped in place: pass a copy to keep a loaded pipeline
    as it was). Continues from ``out_dir/checkpoint`` when ``resume`` and one is there. Stop
    (``control.cancel()``) saves a checkpoint at the last finished step and returns ``stopped``;
    a finished run saves the adapter to ``out_dir/adapter``."""
    import torch

    settings.validate()
    control = control or RunControl()
    if not clips:
        raise ValueError("dataset: no prepared songs to train on")
    out_dir = Path(out_dir)
    device = next(transformer.parameters()).device
    cuda = device.type == "cuda"
    torch.manual_seed(settings.seed)  # the adapter's initial weights and dropout
    model = adapter.wrap(transformer, settings.adapter, settings.rank, settings.alpha, settings.dropout)
    if cuda and getattr(transformer, "_supports_gradient_checkpointing", False):
        transformer.enable_gradient_checkpointing()
    model.train()
    total = settings.total_steps(len(clips))
    params, optimiser, scheduler = _optimiser(model, settings, total, device)
    noise = torch.Generator().manual_seed(settings.seed)
    identity = {"settings": dataclasses.asdict(settings), "clips": [clip.key for clip in clips]}
    checkpoint = out_dir / CHECKPOINT_DIR
    step, losses = 0, []
    if resume and (checkpoint / STATE_NAME).is_file():
        state = _load_checkpoint(checkpoint, model, optimiser, scheduler, noise, identity)
        step, losses = int(state["step"]), list(state["losses"])

    def save() -> Path:
        return _save_checkpoint(
            checkpoint, model, optimiser, scheduler, noise, {**identity, "step": step, "losses": losses}
        )

    started, first = time.perf_counter(), step
    for group in batches(len(clips), settings, start=step):
        if step >= total:
            break
        try:
            control.check()  # Stop, or whoever asked for the run went away
        except Cancelled:
            return TrainResult(step, total, True, losses, None, save())
        loss_sum = _optimiser_step(model, [clips[i] for i in group], noise, params, optimiser, settings)
        scheduler.step()
        step += 1
        losses.append(loss_sum)
        rate = (step - first) / max(time.perf_counter() - started, 1e-9)
        report = StepReport(step, total, loss_sum, scheduler.get_last_lr()[0], rate, (total - step) / rate)
        control.report(step / total, f"Step {step}/{total} · loss {loss_sum:.4f} · {rate:.2f} steps/s")
        if on_step is not None:
            on_step(report)
        if step % settings.save_every == 0 and step < total:
            save()
    saved = adapter.save_official(
        model, settings.adapter, settings.rank, settings.alpha, settings.dropout, out_dir / "adapter",
        {**identity, "step": step, "losses": losses, **(extra or {})},
    )  # fmt: skip
    return TrainResult(step, total, False, losses, saved, save())


def _words(name: str) -> str:
    """A setting's name as the page and the command line's help write it: "gradient_accumulation"
    reads "Gradient accumulation"."""
    return name.replace("_", " ").capitalize()
