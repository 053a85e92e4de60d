"""A LoKr (Kronecker-product adapter) in the PEFT format the studio's trainer writes, checked from its
safetensors header and its ``adapter_config.json`` (``peft_type`` "LOKR") before it is loaded.

A LoKr layer adds ``scale · (w1 ⊗ w2)`` to a linear layer of ``out × in`` features, where
``w1`` is ``a × c`` and ``w2`` is ``b × d`` with ``a·b = out`` and ``c·d = in``; either factor may be
stored whole (``lokr_w1``) or as the product of two rank-r matrices (``lokr_w1_a @ lokr_w1_b``).
peft builds the factors from the config (``peft.tuners.lokr.layer`` ``LoKrLayer.update_layer``,
``factorization``), so the file is accepted only when every layer has exactly the shapes peft would
make for it from that config: nothing half-loads. The scale is peft's alpha / r, which
``lora.stack`` folds into ``w1`` (a Kronecker product is linear in each factor), as it folds a LoRA's
into ``lora_B``; diffusers then loads it (``load_lora_adapter`` takes peft LoKr keys).

Every check is linear in the header (already bounded by ``lora.header``); the config's numbers are
range-checked before use. LyCORIS files with their own ``.alpha`` scalars (another scaling rule),
LoHa, convolution LoKr and per-layer rank patterns are refused in plain words.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lora.header import LoraError, refuse

LOKR_ROLES = ("w1", "w1_a", "w1_b", "w2", "w2_a", "w2_b")
MAX_LOKR_ALPHA = 10_000.0
MAX_DECOMPOSE_FACTOR = 65_536


def is_lokr_key(key: str) -> bool:
    return ".lokr_" in key or key.startswith("lokr_")


def split_lokr_key(key: str) -> tuple[str, str] | None:
    """``(module, role)`` for a peft LoKr key such as ``…q_proj.lokr_w2_a``, else None."""
    module, _, role = key.rpartition(".lokr_")
    return (module, role) if module and role in LOKR_ROLES else None


def _whole_number(path: Path, config: Mapping[str, Any], name: str, low: int, high: int, default: int) -> int:
    value = config.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise refuse(path, f"adapter_config.json: {name} must be a whole number from {low} to {high}, got {value!r}")
    return value


def lokr_settings(path: Path, config: Mapping[str, Any], max_rank: int) -> dict[str, Any]:
    """The config's numbers that decide each layer's shapes and scale, range-checked."""
    if str(config.get("peft_type", "")).upper() != "LOKR":
        raise refuse(
            path,
            "a LoKr needs its adapter_config.json (peft_type LOKR, as the studio's trainer writes it) beside it "
            "or in the same upload; LyCORIS files without one are not supported",
        )
    rank = _whole_number(path, config, "r", 1, max_rank, 8)
    factor = config.get("decompose_factor", -1)
    if factor != -1:
        factor = _whole_number(path, config, "decompose_factor", 1, MAX_DECOMPOSE_FACTOR, -1)
    alpha = config.get("alpha", rank)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= MAX_LOKR_ALPHA:
        raise refuse(path, f"adapter_config.json: alpha must be a number above 0 and at most {MAX_LOKR_ALPHA:g}")
    if not math.isfinite(alpha):
        raise refuse(path, "adapter_config.json: alpha is not a finite number")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise refuse(path, "per-layer ranks or alphas (rank_pattern, alpha_pattern) are not supported for a LoKr")
    if config.get("use_effective_conv2d") and config.get("target_modules") is None:
        raise refuse(path, "convolution LoKr (use_effective_conv2d) is not supported; the DiT's layers are linear")
    return {"r": rank, "alpha": float(alpha), "factor": factor, "decompose_both": bool(config.get("decompose_both"))}


def expected_shapes(in_features: int, out_features: int, rank: int, factor: int, decompose_both: bool) -> dict:
    """The factors peft makes for a linear layer under this config: role -> shape."""
    from peft.tuners.lokr.layer import factorization

    in_m, in_n = factorization(in_features, factor)
    out_l, out_k = factorization(out_features, factor)
    shapes: dict[str, list[int]] = {}
    if not (decompose_both and rank < max(out_l, in_m) / 2):
        shapes["w1"] = [out_l, in_m]
    else:
        shapes |= {"w1_a": [out_l, rank], "w1_b": [rank, in_m]}
    if not rank < max(out_k, in_n) / 2:
        shapes["w2"] = [out_k, in_n]
    else:
        shapes |= {"w2_a": [out_k, rank], "w2_b": [rank, in_n]}
    return shapes


def check_lokr_layers(
    path: Path,
    layout: Mapping[str, tuple[str, str]],
    tensors: Mapping[str, Any],
    targets: Mapping[str, tuple[int, int]],
    settings: Mapping[str, Any],
) -> dict[str, int]:
    """Each layer's factors against what peft would make for it; returns module -> rank."""
    roles: dict[str, dict[str, list[int]]] = {}
    for key, (module, role) in layout.items():
        if role in roles.setdefault(module, {}):
            raise refuse(path, f"layer {module!r} holds lokr_{role} twice")
        roles[module][role] = list(tensors[key]["shape"])
    ranks = {}
    for module, found in sorted(roles.items()):
        in_features, out_features = targets[module]
        want = expected_shapes(in_features, out_features, settings["r"], settings["factor"], settings["decompose_both"])
        if found != want:
            raise refuse(
                path,
                f"layer {module!r}: its LoKr factors {found} are not the {want} this config makes for a layer of "
                f"{in_features} inputs and {out_features} outputs (made for another size of ACE-Step, or edited?)",
            )
        ranks[module] = settings["r"]
    return ranks


def refuse_other_lycoris(path: Path, key: str) -> LoraError:
    if "hada_" in key or "loha_" in key:
        return refuse(path, "LoHa adapters are not supported; LoRA and the studio's own LoKr are")
    if key.endswith(".alpha"):
        return refuse(
            path,
            "LyCORIS LoKr files with per-layer .alpha scalars are not supported; the studio loads the PEFT LoKr "
            "(adapter_model.safetensors + adapter_config.json) that its trainer writes",
        )
    if ".lora_" in key:
        return refuse(path, "it holds both LoRA and LoKr weights; one kind of adapter per file")
    if "lokr_t2" in key:
        return refuse(path, "convolution LoKr is not supported; the DiT's layers are linear")
    return refuse(path, f"{key!r} is not a LoRA or LoKr weight; not an adapter file?")
