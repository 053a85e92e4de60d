"""The model registry: which ACE-Step 1.5 checkpoints the studio knows, and how to sample each.

A model is named by a short registry name (``xl-sft``), a Hub repo id, a local
directory, or ``tiny``. ``resolve_model`` turns any of these into a ``ModelSpec``;
nothing here imports torch or touches the network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Variant = Literal["turbo", "sft", "base"]

# Random-weight test models built locally: the turbo one, and a base-variant stand-in
# that exercises guidance and the base-only Edit tasks.
TINY_MODELS: dict[str, Variant] = {"tiny": "turbo", "tiny-base": "base"}
MODEL_ENV_VAR = "ACE_STUDIO_MODEL"


@dataclass(frozen=True)
class SamplerDefaults:
    """The sampling settings a checkpoint was tuned for, in the pipeline's own names."""

    num_inference_steps: int
    guidance_scale: float
    shift: float
    cfg_interval_start: float = 0.0
    cfg_interval_end: float = 1.0
    dcw_enabled: bool = False  # official: on by default for turbo only (generate_music._resolve_dcw_enabled)


# Source for every figure below: the official ACE-Step 1.5 Gradio defaults
# (acestep/ui/gradio/events/generation/model_config.py: turbo 8 steps, sft 50, base 32;
# shift 3.0 for all; guidance 7.0; CFG interval 0-1), which match the inference guide
# (docs/en/INFERENCE.md: turbo 8, base 32-64, guidance 5-9) and the README model table.
# Turbo is guidance-distilled, so the pipeline runs it with guidance 1.0.
SAMPLER_DEFAULTS: dict[Variant, SamplerDefaults] = {
    "turbo": SamplerDefaults(num_inference_steps=8, guidance_scale=1.0, shift=3.0, dcw_enabled=True),
    "sft": SamplerDefaults(num_inference_steps=50, guidance_scale=7.0, shift=3.0),
    "base": SamplerDefaults(num_inference_steps=32, guidance_scale=7.0, shift=3.0),
}


@dataclass(frozen=True)
class Checkpoint:
    """One registry entry. ``confirmed`` means an official source names ``repo_id``."""

    name: str
    repo_id: str
    variant: Variant
    confirmed: bool
    source: str  # where the repo id was confirmed, or why it is only likely
    dit_params: str  # size of the diffusion transformer
    download_gb: float  # approximate download, DiT + VAE + text encoder
    min_vram_gb: float  # rough floor for bf16 inference without offload


REGISTRY: dict[str, Checkpoint] = {
    c.name: c
    for c in (
        Checkpoint(
            name="xl-sft",
            repo_id="ACE-Step/acestep-v15-xl-sft-diffusers",
            variant="sft",
            confirmed=False,
            source="follows the naming of the confirmed XL repos; no official source names it yet",
            dit_params="4B",
            download_gb=10.0,
            min_vram_gb=20.0,
        ),
        Checkpoint(
            name="xl-turbo",
            repo_id="ACE-Step/acestep-v15-xl-turbo-diffusers",
            variant="turbo",
            confirmed=True,
            source="diffusers AceStepPipeline docs and docstring example",
            dit_params="4B",
            download_gb=10.0,
            min_vram_gb=20.0,
        ),
        Checkpoint(
            name="xl-base",
            repo_id="ACE-Step/acestep-v15-xl-base-diffusers",
            variant="base",
            confirmed=True,
            source="official model card: 'the official Diffusers-format version of the ACE-Step v1.5 XL Base'",
            dit_params="4B",
            download_gb=10.0,
            min_vram_gb=20.0,
        ),
        Checkpoint(
            name="turbo",
            repo_id="ACE-Step/Ace-Step1.5",
            variant="turbo",
            confirmed=False,
            source="linked from the diffusers docs' Variants table, but the official downloader treats it as "
            "the original (non-diffusers) layout; may not load with from_pretrained",
            dit_params="2B",
            download_gb=6.0,
            min_vram_gb=8.0,
        ),
        Checkpoint(
            name="sft",
            repo_id="ACE-Step/acestep-v15-sft",
            variant="sft",
            confirmed=False,
            source="linked from the diffusers docs' Variants table, but the official downloader treats it as "
            "the original (non-diffusers) layout; may not load with from_pretrained",
            dit_params="2B",
            download_gb=6.0,
            min_vram_gb=8.0,
        ),
        Checkpoint(
            name="base",
            repo_id="ACE-Step/acestep-v15-base",
            variant="base",
            confirmed=False,
            source="linked from the diffusers docs' Variants table, but the official downloader treats it as "
            "the original (non-diffusers) layout; may not load with from_pretrained",
            dit_params="2B",
            download_gb=6.0,
            min_vram_gb=8.0,
        ),
    )
}


def default_model_name() -> str:
    """XL SFT when its diffusers repo is confirmed; otherwise the best confirmed checkpoint."""
    for name in ("xl-sft", "xl-turbo", "turbo"):
        if REGISTRY[name].confirmed:
            return name
    raise RuntimeError("the registry lists no confirmed checkpoint")


@dataclass(frozen=True)
class ModelSpec:
    """What to load: a registry name, Hub repo id or local path, resolved."""

    label: str  # what the UI and settings.json call it
    source: str  # a Hub repo id or a local directory
    variant: Variant
    is_local: bool
    is_tiny: bool = False
    checkpoint: Checkpoint | None = None

    @property
    def defaults(self) -> SamplerDefaults:
        return SAMPLER_DEFAULTS[self.variant]


def guess_variant(name: str) -> Variant:
    """Guess a checkpoint's variant from its name; the loaded config corrects turbo."""
    lowered = name.lower()
    if "turbo" in lowered:
        return "turbo"
    if "base" in lowered:
        return "base"
    return "sft"


def resolve_model(spec: str | None = None, cache_dir: Path | None = None) -> ModelSpec:
    """Resolve ``--model`` / ``ACE_STUDIO_MODEL`` into a ``ModelSpec``.

    Raises ``ValueError`` for something that is neither a registry name, an existing
    directory, nor shaped like a Hub repo id (``owner/name``).
    """
    spec = (spec or os.environ.get(MODEL_ENV_VAR) or default_model_name()).strip()
    if spec in TINY_MODELS:
        from tools.tiny_model import tiny_model_dir

        variant = TINY_MODELS[spec]
        return ModelSpec(
            label=spec,
            source=str(tiny_model_dir(cache_dir, turbo=variant == "turbo")),
            variant=variant,
            is_local=True,
            is_tiny=True,
        )
    if spec in REGISTRY:
        entry = REGISTRY[spec]
        return ModelSpec(
            label=entry.name,
            source=entry.repo_id,
            variant=entry.variant,
            is_local=False,
            checkpoint=entry,
        )
    path = Path(spec).expanduser()
    if path.is_dir():
        return ModelSpec(
            label=path.name,
            source=str(path.resolve()),
            variant=guess_variant(path.name),
            is_local=True,
        )
    parts = spec.split("/")
    if len(parts) == 2 and all(parts) and not spec.startswith((".", "~")):
        return ModelSpec(label=spec, source=spec, variant=guess_variant(spec), is_local=False)
    known = ", ".join([*REGISTRY, *TINY_MODELS])
    raise ValueError(
        f"model {spec!r} is not a registry name ({known}), an existing directory, "
        "or a Hub repo id of the form owner/name"
    )


def unavailable_message(spec: ModelSpec, error: Exception) -> str:
    """Why the model could not be loaded, and what to do about it."""
    if spec.is_local:
        return (
            f"Could not load the model '{spec.label}' from {spec.source}: {error}. "
            "Check that the folder holds a diffusers-format ACE-Step 1.5 checkpoint (model_index.json)."
        )
    return (
        f"Could not load the model '{spec.label}' (Hugging Face repo {spec.source}): "
        "the Hub could not be reached and no complete local copy was found. "
        f"Download it where there is a network (hf download {spec.source} --local-dir DIR), "
        "then start the studio with --model DIR, or use --model tiny for the offline test model "
        f"(it outputs noise). Details: {error}"
    )


# ---- the planner's size


PLANNER_ENV_VAR = "ACE_STUDIO_PLANNER"
# The planner that fits a GPU, largest first: (more than this many GB, the 5 Hz LM). From the official
# tiers (acestep/gpu_config.py: GPU_TIER_CONFIGS' available_lm_models, get_gpu_tier's bounds, a 16 GB
# card counted from 15.5 GB as VRAM_16GB_MIN_GB does): 6 GB or less none, to 12 GB 0.6B, to 16 GB
# 1.7B, then 4B. The largest a tier allows is the one chosen.
PLANNER_TIERS: tuple[tuple[float, str], ...] = ((15.5, "4B"), (12.0, "1.7B"), (6.0, "0.6B"))
CPU_PLANNER = "0.6B"  # no GPU memory to go by: the smallest, the one a CPU runs at a usable speed


@dataclass(frozen=True)
class PlannerChoice:
    """Which planner the studio loads and why (said once at start)."""

    name: str | None  # a size, a Hub repo id or a folder; None: no planner (Think is off)
    reason: str


def choose_planner(requested: str | None, device: str, gpu_memory_gb: float | None = None) -> PlannerChoice:
    """The planner for ``device`` ("cuda", "mps" or "cpu") with ``gpu_memory_gb`` of memory, unless
    ``requested`` (``--planner``, else ``$ACE_STUDIO_PLANNER``) names one ("none" for no planner)."""
    requested = requested or os.environ.get(PLANNER_ENV_VAR) or None
    if requested is not None:
        name = None if requested.strip().lower() == "none" else requested.strip()
        return PlannerChoice(name, f"planner {name or 'none'}: as asked")
    if device == "cpu" or gpu_memory_gb is None:
        return PlannerChoice(CPU_PLANNER, f"planner {CPU_PLANNER}: no GPU to size it by, so the smallest, on the CPU")
    for above_gb, size in PLANNER_TIERS:
        if gpu_memory_gb > above_gb:
            return PlannerChoice(size, f"planner {size}: fits {gpu_memory_gb:.1f} GB of {device} memory")
    return PlannerChoice(
        None, f"no planner: {gpu_memory_gb:.1f} GB of {device} memory is too little (over 6 GB needed); Think is off"
    )
