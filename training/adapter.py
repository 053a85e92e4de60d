"""The trained adapter: peft on the DiT's attention projections, saved in the official format.

Targets: the official trainer's ``q_proj``/``k_proj``/``v_proj``/``o_proj`` of the DiT decoder
(``acestep/training/configs.py`` ``LoRAConfig.target_modules``; ``lora_utils.py``
``inject_lora_into_dit`` wraps the decoder with ``get_peft_model``), which diffusers' DiT spells
``to_q``/``to_k``/``to_v``/``to_out.0``, in both self- and cross-attention.

Saved as ``lora_utils.py`` ``save_lora_weights`` does (PEFT ``save_pretrained`` of the decoder):
``adapter_model.safetensors`` + ``adapter_config.json``, keys ``base_model.model.<module>.lora_A.weight``
in the official module names, so the folder loads into the official studio and ours alike.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

DIFFUSERS_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
OFFICIAL_NAMES = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out.0": "o_proj"}
WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"
ADAPTER_KINDS = ("lora", "lokr")


def peft_config(kind: str, rank: int, alpha: int, dropout: float, targets=DIFFUSERS_TARGETS):
    """peft's config for a LoRA (``LoraConfig``) or a LoKr (``LoKrConfig``, Kronecker factors)."""
    from peft import LoKrConfig, LoraConfig

    if kind == "lora":
        return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none")
    if kind == "lokr":
        # peft's LoKr has no input dropout; its rank_dropout plays that part.
        return LoKrConfig(r=rank, alpha=alpha, rank_dropout=dropout, target_modules=list(targets))
    raise ValueError(f"adapter: one of {', '.join(ADAPTER_KINDS)}, got {kind!r}")


def wrap(transformer, kind: str, rank: int, alpha: int, dropout: float):
    """The DiT with a fresh adapter (its base frozen), as ``get_peft_model`` returns it."""
    from peft import get_peft_model

    return get_peft_model(transformer, peft_config(kind, rank, alpha, dropout))


def adapter_state(model) -> dict[str, Any]:
    """The adapter's own weights, keys as PEFT saves them (adapter name dropped), in diffusers names."""
    from peft import get_peft_model_state_dict

    return {key: tensor.detach().cpu().contiguous() for key, tensor in get_peft_model_state_dict(model).items()}


def load_adapter_state(model, state: dict[str, Any]) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, state)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ValueError(f"checkpoint: holds weights this adapter does not have ({unexpected[0]})")


def official_key(key: str) -> str:
    for diffusers_name, official in OFFICIAL_NAMES.items():
        key = key.replace(f".{diffusers_name}.", f".{official}.")
    return key


def save_official(model, kind: str, rank: int, alpha: int, dropout: float, target: Path, extra: dict) -> Path:
    """Write the adapter folder (weights, PEFT config, ``training.json`` with ``extra``) atomically."""
    from safetensors.torch import save_file

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".adapter-", dir=target.parent))
    try:
        state = {official_key(key): tensor for key, tensor in adapter_state(model).items()}
        # Stated in the file too, so the weights added alone still play at their alpha with their word.
        metadata = {"format": "pt", "trigger_words": str(extra.get("trigger_word") or "")}
        if kind == "lora":
            metadata["lora_alpha"] = str(alpha)
        save_file(state, str(staging / WEIGHTS_NAME), metadata=metadata)
        config = peft_config(kind, rank, alpha, dropout, targets=[OFFICIAL_NAMES[t] for t in DIFFUSERS_TARGETS])
        config.save_pretrained(str(staging))
        (staging / "training.json").write_text(json.dumps(extra, indent=2, default=str), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
