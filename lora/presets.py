"""LoRA presets: the manifest ``loras.json`` (LoRAs on the Hub the studio offers by name),
checked on reading, and their download."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend import ModelUnavailableError
from checkpoints import REGISTRY, TINY_MODELS
from lora.check import check_trigger_words, check_weight
from lora.header import LoraError, file_sha256, refuse

PRESETS_FILE = Path(__file__).with_name("loras.json")

PRESET_REQUIRED = {"name", "repo_id", "file", "trigger_words", "weight", "base_models"}
PRESET_OPTIONAL = {"config_file", "revision", "sha256", "license", "source"}


@dataclass(frozen=True)
class LoraPreset:
    """One entry of ``loras.json``: a LoRA on the Hub the studio offers by name."""

    name: str
    repo_id: str
    file: str  # the .safetensors file in the repo
    trigger_words: tuple[str, ...]
    weight: float  # the suggested weight
    base_models: tuple[str, ...]  # registry names of the checkpoints it was made for
    config_file: str | None = None  # PEFT adapter_config.json holding lora_alpha
    revision: str | None = None  # a commit, so a changed repo cannot change the preset
    sha256: str | None = None
    license: str | None = None
    source: str | None = None  # where the entry was confirmed


def _preset(raw: Any, index: int) -> LoraPreset:
    where = f"loras.json entry {index}"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: must be an object, got {raw!r}")
    missing, extra = PRESET_REQUIRED - raw.keys(), raw.keys() - PRESET_REQUIRED - PRESET_OPTIONAL
    if missing or extra:
        raise ValueError(f"{where}: missing {sorted(missing)}, unknown {sorted(extra)}")
    if not isinstance(raw["name"], str) or not raw["name"].strip():
        raise ValueError(f"{where}: name must be a non-empty string, got {raw['name']!r}")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", str(raw["repo_id"])):
        raise ValueError(f"{where}: repo_id must look like owner/name, got {raw['repo_id']!r}")
    for key, suffix in (("file", ".safetensors"), ("config_file", ".json")):
        value = raw.get(key)
        if (key == "file" or value is not None) and (
            not isinstance(value, str) or not value.endswith(suffix) or ".." in value or value.startswith("/")
        ):
            raise ValueError(f"{where}: {key} must be a relative path ending in {suffix}, got {value!r}")
    for key, pattern in (("revision", r"[0-9a-f]{40}"), ("sha256", r"[0-9a-f]{64}")):
        if raw.get(key) is not None and not re.fullmatch(pattern, str(raw[key])):
            raise ValueError(f"{where}: {key} must match {pattern}, got {raw[key]!r}")
    known = set(REGISTRY) | set(TINY_MODELS)
    bases = raw["base_models"]
    if not isinstance(bases, list) or not bases or not set(bases) <= known:
        raise ValueError(f"{where}: base_models must list model names from {sorted(known)}, got {bases!r}")
    if not isinstance(raw["trigger_words"], list):
        raise ValueError(f"{where}: trigger_words must be a list, got {raw['trigger_words']!r}")
    return LoraPreset(
        name=raw["name"].strip(),
        repo_id=raw["repo_id"],
        file=raw["file"],
        trigger_words=check_trigger_words(raw["trigger_words"]),
        weight=check_weight(raw["name"], raw["weight"]),
        base_models=tuple(bases),
        **{key: raw.get(key) for key in PRESET_OPTIONAL},
    )


def load_presets(path: Path = PRESETS_FILE) -> list[LoraPreset]:
    """Read and validate the presets manifest (a JSON list of ``LoraPreset`` fields)."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(raw, list):
        raise ValueError(f"{Path(path).name}: must be a JSON list of presets")
    presets = [_preset(item, i) for i, item in enumerate(raw)]
    names = [p.name for p in presets]
    if len(set(names)) != len(names):
        raise ValueError(f"{Path(path).name}: preset names must be unique, got {names}")
    return presets


def fetch_preset(
    name: str,
    progress: Callable[[float, str], None] | None = None,
    presets: Sequence[LoraPreset] | None = None,
    cache_dir: Path | None = None,
) -> Path:
    """Download a preset's file (and its adapter_config.json beside it) from the Hub; return its path.

    Raises ``ModelUnavailableError`` when the Hub cannot be reached and no copy is cached.
    """
    from huggingface_hub import hf_hub_download

    found = [p for p in (presets if presets is not None else load_presets()) if p.name == name]
    if not found:
        raise LoraError(f"lora preset: no preset named {name!r}")
    preset = found[0]
    report = progress or (lambda fraction, message: None)
    report(0.0, f"Downloading LoRA {preset.name}…")
    try:
        path = Path(hf_hub_download(preset.repo_id, preset.file, revision=preset.revision, cache_dir=cache_dir))
        if preset.config_file:
            hf_hub_download(preset.repo_id, preset.config_file, revision=preset.revision, cache_dir=cache_dir)
    except (OSError, ValueError) as error:
        raise ModelUnavailableError(
            f"The LoRA preset {preset.name!r} could not be downloaded from Hugging Face ({preset.repo_id}): "
            f"the Hub could not be reached and no copy is cached. Download {preset.file} where there is a "
            f"network (hf download {preset.repo_id}) and add the file instead. Details: {error}"
        ) from error
    if preset.sha256 and file_sha256(path) != preset.sha256:
        raise refuse(path, f"its sha256 does not match the preset's ({preset.sha256[:16]}…); not loading it")
    report(1.0, f"Downloaded LoRA {preset.name}")
    return path
