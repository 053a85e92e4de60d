"""Checking a LoRA file for the DiT from its safetensors header alone, before loading it.

``inspect_lora`` refuses a file before a byte of its tensors is read: pickles, oversized or
corrupt headers, unknown dtypes, layers this DiT lacks, shapes that do not fit, ranks above
``MAX_RANK``; it maps the file's keys onto the DiT's module names and works out the alpha/r
scale to fold into ``lora_B`` (see ``lora.stack`` for the formats and why folding). A PEFT LoKr
(the studio's trainer writes one) is checked factor by factor against its config (``lora.lokr``).

The file is untrusted: its header is counted on the raw bytes (``HEADER_LIMITS``: length,
depth, digits, names, dimensions per tensor) before it is parsed, so every check takes time
linear in a header of at most ``MAX_HEADER_BYTES`` (issue #18: a shape of a million entries
took 35 s when its product was computed).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bounded_json
from lora.header import (
    CONFIG_LIMITS,
    LoraError,
    file_sha256,
    read_safetensors_header,
    refuse,
)
from lora.lokr import check_lokr_layers, is_lokr_key, lokr_settings, refuse_other_lycoris, split_lokr_key

MAX_RANK = 256
MAX_WEIGHT = 2.0
MAX_TRIGGER_WORDS = 16
MAX_TRIGGER_CHARS = 100
STORE_SUBDIR = "loras"

# The original trainer keeps the Qwen-style attention names; diffusers renamed them.
# The MLP projections (gate/up/down_proj) have the same names in both.
_ORIGINAL_NAMES = {".to_q": ".q_proj", ".to_k": ".k_proj", ".to_v": ".v_proj", ".to_out.0": ".o_proj"}
_DOTTED_PREFIXES = ("transformer.", "base_model.model.", "diffusion_model.", "decoder.")
_FLAT_PREFIXES = ("lora_unet_", "diffusion_model_", "decoder_")
_ROLE_SUFFIXES = {
    ".lora_A.weight": "A",
    ".lora_B.weight": "B",
    ".lora_down.weight": "A",
    ".lora_up.weight": "B",
    ".alpha": "alpha",
}


@dataclass(frozen=True)
class LoraInfo:
    """What ``inspect_lora`` learned about one file, before loading it."""

    path: Path
    sha256: str
    size_bytes: int
    rank: int  # the largest rank of any layer
    alpha: float | None  # the alpha stated (the most common one if it varies); None: none stated
    modules: int  # DiT layers the adapter changes
    key_format: str  # "diffusers", "peft" or "kohya"
    trigger_words: tuple[str, ...] = ()
    # key in the file -> (DiT module name, "A" | "B", or a LoKr factor "w1", "w2_a", ...); module ->
    # alpha/r, folded into lora_B (a LoRA) or w1 (a LoKr: ``lora.lokr``)
    layout: Mapping[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    scales: Mapping[str, float] = field(default_factory=dict, repr=False)
    kind: str = "lora"  # "lora" or "lokr"


def target_modules(transformer) -> dict[str, tuple[int, int]]:
    """The DiT's linear layers, name -> (in_features, out_features), seen through peft wrappers.

    Adapters wrap these layers but never add or resize one, so the map can be taken once and
    files checked against it later without touching the DiT.
    """
    import torch

    targets = {}
    for name, module in transformer.named_modules():
        if ".lora_" in f".{name}" or not isinstance(module, torch.nn.Linear):
            continue
        while name.endswith(".base_layer"):  # a LoKr wrapping a LoRA wrapping the layer: two levels
            name = name.removesuffix(".base_layer")
        targets[name] = (module.in_features, module.out_features)
    return targets


def _aliases(targets: Iterable[str]) -> dict[str, str]:
    """Every spelling of a module name the accepted formats use -> its diffusers name."""
    aliases = {}
    for name in targets:
        original = name
        for new, old in _ORIGINAL_NAMES.items():
            if name.endswith(new):
                original = name.removesuffix(new) + old
        for alias in (name, original):
            aliases[alias] = name
            aliases[alias.replace(".", "_")] = name
    return aliases


def _split_key(key: str) -> tuple[str, str] | None:
    for suffix, role in _ROLE_SUFFIXES.items():
        if key.endswith(suffix):
            return key.removesuffix(suffix), role
    return None


def _strip_prefixes(module: str) -> str:
    prefixes = _FLAT_PREFIXES if module.startswith("lora_unet_") else _DOTTED_PREFIXES
    stripped = True
    while stripped:
        stripped = False
        for prefix in prefixes:
            if module.startswith(prefix):
                module, stripped = module.removeprefix(prefix), True
    return module


def read_adapter_config(path: Path, adapter_config: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if adapter_config is not None:
        return adapter_config
    beside = path.with_name("adapter_config.json")
    if not beside.is_file():
        return {}
    try:
        if beside.stat().st_size > CONFIG_LIMITS.max_bytes:
            raise bounded_json.JsonLimitError(f"it is over {CONFIG_LIMITS.max_bytes:,} bytes")
        config = bounded_json.loads(beside.read_bytes(), CONFIG_LIMITS)
    except (OSError, ValueError) as error:
        raise refuse(path, f"adapter_config.json beside it could not be read ({error})") from None
    if not isinstance(config, dict):
        raise refuse(path, "adapter_config.json beside it is not a JSON object")
    return config


def _number(path: Path, what: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise refuse(path, f"its {what} is not a number, got {value!r}") from None


def _config_json(text: str) -> Any:
    """JSON a trainer kept in a metadata string, parsed within ``CONFIG_LIMITS``."""
    return bounded_json.loads(text.encode("utf-8", "surrogatepass"), CONFIG_LIMITS)


def _metadata_alpha(path: Path, metadata: Mapping[str, str]) -> float | None:
    for key in ("lora_alpha", "ss_network_alpha"):
        if key in metadata:
            return _number(path, f"metadata {key}", metadata[key])
    if "lora_adapter_metadata" in metadata:  # what diffusers' save_lora_weights writes
        try:
            stated = _config_json(metadata["lora_adapter_metadata"])
        except ValueError as error:
            raise refuse(path, f"its lora_adapter_metadata is refused: {error}") from None
        for key, value in stated.items() if isinstance(stated, dict) else ():
            if key.split(".")[-1] == "lora_alpha":
                return _number(path, "lora_alpha", value)
    return None


def _metadata_triggers(metadata: Mapping[str, str]) -> tuple[str, ...]:
    text = metadata.get("trigger_words") or metadata.get("modelspec.trigger_phrase") or ""
    try:
        words = _config_json(text) if text.startswith("[") else text.split(",")
    except ValueError:
        words = text.split(",")
    return tuple(str(w).strip() for w in words if str(w).strip())


def inspect_lora(
    path: Path | str,
    transformer_or_targets: Any,
    adapter_config: Mapping[str, Any] | None = None,
) -> LoraInfo:
    """Check a LoRA file against the loaded DiT (or its ``target_modules`` map) and describe it.

    The structure is checked from the safetensors header alone; only the few ``.alpha``
    scalars are read from the data. ``adapter_config`` overrides the PEFT
    ``adapter_config.json`` looked for beside the file. Raises ``LoraError``.
    """
    path = Path(path)
    tensors, metadata = read_safetensors_header(path)
    targets = (
        transformer_or_targets
        if isinstance(transformer_or_targets, Mapping)
        else target_modules(transformer_or_targets)
    )
    config = read_adapter_config(path, adapter_config)
    if any(is_lokr_key(key) for key in tensors):
        return _inspect_lokr(path, tensors, metadata, targets, config)
    keys = _map_keys(path, tensors, targets)
    ranks = _ranks(path, keys.layout, tensors, targets)
    if config.get("use_dora"):
        raise refuse(path, "DoRA adapters are not supported; only plain LoRA")
    scales, stated = _scales(path, ranks, keys.alpha_keys, metadata, config)
    return LoraInfo(
        path=path,
        sha256=file_sha256(path),
        size_bytes=path.stat().st_size,
        rank=max(ranks.values()),
        alpha=Counter(stated).most_common(1)[0][0] if stated else None,
        modules=len(ranks),
        key_format="kohya" if keys.kohya else "peft" if keys.peft else "diffusers",
        trigger_words=_metadata_triggers(metadata),
        layout=keys.layout,
        scales=scales,
    )


@dataclass
class _KeyMap:
    """Where each tensor of a LoRA file goes: key -> (DiT module, "A" or "B"), the alpha scalars'
    keys by module, and which key format the file spoke."""

    layout: dict[str, tuple[str, str]]
    alpha_keys: dict[str, str]
    kohya: bool
    peft: bool


def _map_keys(path: Path, tensors: Mapping[str, Any], targets: Mapping[str, tuple[int, int]]) -> _KeyMap:
    aliases = _aliases(targets)
    keys = _KeyMap({}, {}, False, False)
    unknown: list[str] = []
    for key in tensors:
        split = _split_key(key)
        if split is None:
            if "dora_scale" in key or "lora_magnitude_vector" in key:
                raise refuse(path, "DoRA adapters are not supported; only plain LoRA")
            if any(tag in key for tag in ("hada_", "loha_")):
                raise refuse_other_lycoris(path, key)
            raise refuse(path, f"{key!r} is not a LoRA weight (lora_A/lora_B or lora_down/lora_up); not a LoRA file?")
        raw_module, role = split
        module = aliases.get(_strip_prefixes(raw_module))
        if module is None:
            unknown.append(raw_module)
            continue
        keys.kohya |= raw_module.startswith("lora_unet_") or key.endswith(("lora_down.weight", "lora_up.weight"))
        keys.peft |= raw_module.startswith("base_model.model.") or module != _strip_prefixes(raw_module)
        if role == "alpha":
            keys.alpha_keys[module] = key
        else:
            keys.layout[key] = (module, role)
    _refuse_unknown(path, unknown, bool(keys.layout))
    return keys


def _refuse_unknown(path: Path, unknown: list[str], some_known: bool) -> None:
    if unknown and not some_known:
        raise refuse(
            path,
            f"these are files for another model: none of its layers (e.g. {unknown[0]!r}) exist in the "
            "ACE-Step 1.5 DiT (a LoRA for Stable Diffusion, FLUX or ACE-Step v1?)",
        )
    if unknown:
        raise refuse(
            path,
            f"{len(set(unknown))} of its layers do not exist in this model's DiT, e.g. {unknown[0]!r}: "
            "made for another model?",
        )


def _inspect_lokr(
    path: Path,
    tensors: Mapping[str, Any],
    metadata: Mapping[str, str],
    targets: Mapping[str, tuple[int, int]],
    config: Mapping[str, Any],
) -> LoraInfo:
    """A PEFT LoKr (``lora.lokr``): every key a factor of a DiT layer, shaped as its config makes it."""
    settings = lokr_settings(path, config, MAX_RANK)
    aliases = _aliases(targets)
    layout: dict[str, tuple[str, str]] = {}
    unknown: list[str] = []
    for key in tensors:
        split = split_lokr_key(key)
        if split is None:
            raise refuse_other_lycoris(path, key)
        raw_module, role = split
        module = aliases.get(_strip_prefixes(raw_module))
        if module is None:
            unknown.append(raw_module)
        else:
            layout[key] = (module, role)
    _refuse_unknown(path, unknown, bool(layout))
    ranks = check_lokr_layers(path, layout, tensors, targets, settings)
    return LoraInfo(
        path=path,
        sha256=file_sha256(path),
        size_bytes=path.stat().st_size,
        rank=settings["r"],
        alpha=settings["alpha"],
        modules=len(ranks),
        key_format="peft",
        trigger_words=_metadata_triggers(metadata),
        layout=layout,
        scales=dict.fromkeys(ranks, settings["alpha"] / settings["r"]),
        kind="lokr",
    )


def _ranks(
    path: Path,
    layout: Mapping[str, tuple[str, str]],
    tensors: Mapping[str, Any],
    targets: Mapping[str, tuple[int, int]],
) -> dict[str, int]:
    """Each module's rank, once its two matrices are checked against the layer they adapt."""
    shapes: dict[str, dict[str, list[int]]] = {}
    for key, (module, role) in layout.items():
        shapes.setdefault(module, {})[role] = tensors[key]["shape"]
    ranks: dict[str, int] = {}
    for module, pair in sorted(shapes.items()):
        if set(pair) != {"A", "B"}:
            raise refuse(path, f"layer {module!r} has only one of its two LoRA matrices")
        a, b = pair["A"], pair["B"]
        if len(a) != 2 or len(b) != 2:
            raise refuse(path, f"wrong shapes for layer {module!r}: LoRA matrices must be 2-D, got {a} and {b}")
        rank = a[0]
        if rank > MAX_RANK:
            raise refuse(path, f"rank {rank} at layer {module!r} is above the limit of {MAX_RANK}")
        in_features, out_features = targets[module]
        if rank < 1 or b[1] != rank or a[1] != in_features or b[0] != out_features:
            raise refuse(
                path,
                f"wrong shapes for layer {module!r}: lora_A {a} and lora_B {b} do not fit its "
                f"{in_features} inputs and {out_features} outputs (made for another size of ACE-Step, e.g. XL vs 2B?)",
            )
        ranks[module] = rank
    return ranks


def _scales(
    path: Path,
    ranks: Mapping[str, int],
    alpha_keys: Mapping[str, str],
    metadata: Mapping[str, str],
    config: Mapping[str, Any],
) -> tuple[dict[str, float], list[float]]:
    """Each module's alpha / r (alpha / sqrt(r) with rsLoRA), and the alphas the file stated."""
    alphas = _read_alphas(path, alpha_keys)
    default_alpha = _metadata_alpha(path, metadata)
    if default_alpha is None and config.get("lora_alpha") is not None:
        default_alpha = _number(path, "adapter_config lora_alpha", config["lora_alpha"])
    pattern = {str(k): _number(path, "alpha_pattern", v) for k, v in (config.get("alpha_pattern") or {}).items()}
    scales: dict[str, float] = {}
    stated: list[float] = []
    for module, rank in ranks.items():
        alpha = alphas.get(module, _pattern_alpha(module, pattern, default_alpha))
        if alpha is None:
            scales[module] = 1.0  # alpha = r, as diffusers assumes
            continue
        if not math.isfinite(alpha) or alpha <= 0:
            raise refuse(path, f"alpha {alpha} for layer {module!r} is not a positive number")
        stated.append(alpha)
        scales[module] = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
    return scales, stated


def _pattern_alpha(module: str, pattern: Mapping[str, float], default: float | None) -> float | None:
    names = {module, _strip_prefixes(module)} | {module.replace(new, old) for new, old in _ORIGINAL_NAMES.items()}
    for key, alpha in pattern.items():
        if any(name == key or name.endswith(f".{key}") for name in names):
            return alpha
    return default


def _read_alphas(path: Path, alpha_keys: Mapping[str, str]) -> dict[str, float]:
    if not alpha_keys:
        return {}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        values = {module: handle.get_tensor(key) for module, key in alpha_keys.items()}
    for module, value in values.items():
        if value.numel() != 1:
            raise refuse(path, f"the alpha of layer {module!r} is not a single number")
    return {module: float(value.reshape(())) for module, value in values.items()}


def check_trigger_words(words: Iterable[str]) -> tuple[str, ...]:
    cleaned = tuple(str(word).strip() for word in words if str(word).strip())
    if len(cleaned) > MAX_TRIGGER_WORDS:
        raise LoraError(f"trigger_words: at most {MAX_TRIGGER_WORDS}, got {len(cleaned)}")
    for word in cleaned:
        if len(word) > MAX_TRIGGER_CHARS or "\n" in word:
            raise LoraError(f"trigger_words: one line of at most {MAX_TRIGGER_CHARS} characters each, got {word!r}")
    return cleaned


def check_weight(key: str, weight: Any) -> float:
    try:
        value = float(weight)
    except (TypeError, ValueError):
        raise LoraError(f"lora weight for {key!r}: must be a number from 0 to {MAX_WEIGHT:g}, got {weight!r}") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_WEIGHT:
        raise LoraError(f"lora weight for {key!r}: must be from 0 to {MAX_WEIGHT:g}, got {weight!r}")
    return value
