"""Checking a LoRA file for the DiT from its safetensors header alone, before loading it.

``inspect_lora`` refuses a file before a byte of its tensors is read: pickles, oversized or
corrupt headers, unknown dtypes, layers this DiT lacks, shapes that do not fit, ranks above
``MAX_RANK``; it maps the file's keys onto the DiT's module names and works out the alpha/r
scale to fold into ``lora_B`` (see ``lora_stack`` for the formats and why folding).

The file is untrusted: its header is counted on the raw bytes (``HEADER_LIMITS``: length,
depth, digits, names, dimensions per tensor) before it is parsed, so every check takes time
linear in a header of at most ``MAX_HEADER_BYTES`` (issue #18: a shape of a million entries
took 35 s when its product was computed).
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bounded_json

MAX_FILE_BYTES = 1024**3  # 1 GiB: real ACE-Step LoRAs are 20-400 MB
MAX_HEADER_BYTES = 8 * 1024**2  # a real LoRA's header is well under 1 MB; safetensors itself allows 100 MB
MAX_TENSORS = 10_000  # the XL DiT has 352 linear layers: 1,056 tensors with A, B and alpha each
MAX_DIMS = 4  # a LoRA weight is 2-D (alpha 0-D); a conv LoRA would be 4-D
MAX_METADATA_ENTRIES = 1_000
MAX_KEY_CHARS = 512
# Counted on the raw header before it is parsed: an entry is its name, dtype, shape and
# data_offsets (4 names, up to 7 commas with a 4-D shape, 5 strings).
HEADER_LIMITS = bounded_json.JsonLimits(
    max_bytes=MAX_HEADER_BYTES,
    max_depth=3,  # {name: {"shape": [..]}}
    max_names=4 * MAX_TENSORS + MAX_METADATA_ENTRIES,
    max_values=7 * MAX_TENSORS + MAX_METADATA_ENTRIES,
    max_list_items=MAX_DIMS,
    max_strings=5 * MAX_TENSORS + 2 * MAX_METADATA_ENTRIES,  # a name, 3 field names and a dtype each
    max_name_chars=MAX_KEY_CHARS,
)
# adapter_config.json and the JSON some trainers keep in the metadata (a PEFT LoraConfig)
CONFIG_LIMITS = bounded_json.JsonLimits(
    max_bytes=1024**2,
    max_depth=6,
    max_names=10_000,
    max_values=100_000,
    max_list_items=10_000,
    max_strings=30_000,
    max_digits=32,
    max_name_chars=MAX_KEY_CHARS,
)
MAX_RANK = 256
MAX_WEIGHT = 2.0
MAX_TRIGGER_WORDS = 16
MAX_TRIGGER_CHARS = 100
HASH_CHUNK_BYTES = 1024**2
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}
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


class LoraError(ValueError):
    """A LoRA file or stack request was refused; the message says why, in plain words."""


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
    # key in the file -> (DiT module name, "A" | "B"); module -> alpha/r folded into lora_B
    layout: Mapping[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    scales: Mapping[str, float] = field(default_factory=dict, repr=False)


def refuse(path: Path, why: str) -> LoraError:
    return LoraError(f"LoRA file {path.name}: {why}")


def _gb(size: float) -> str:
    return f"{size / 1024**3:.1f} GB"


def read_safetensors_header(path: Path) -> tuple[dict[str, dict], dict[str, str]]:
    """Parse and check a safetensors header without reading any tensor data.

    Returns (tensors, metadata). Raises ``LoraError`` for pickles, oversized, truncated or
    corrupt files and unknown dtypes. The header is bounded (``HEADER_LIMITS``) before it is
    parsed, so the check takes time linear in its length whatever the file holds.
    """
    path = Path(path)
    if not path.is_file():
        raise LoraError(f"LoRA file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise refuse(path, "pickled files can run code; only .safetensors is accepted")
    if suffix != ".safetensors":
        raise refuse(path, f"only .safetensors files are accepted, got a {suffix or 'file without extension'}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise refuse(path, f"the file is {_gb(size)}; the limit is {_gb(MAX_FILE_BYTES)}")
    with path.open("rb") as handle:
        head = handle.read(8)
        if not head:
            raise refuse(path, "the file is empty")
        header_len = struct.unpack("<Q", head)[0] if len(head) == 8 else size
        plausible = header_len <= min(MAX_HEADER_BYTES, size - 8)
        raw = handle.read(header_len) if plausible else b""
    # A real header's length can begin with the same bytes as a pickle, so the magic numbers
    # are only read once the file has failed to look like safetensors.
    if not raw.startswith(b"{"):
        if (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")) or head[:4] == b"PK\x03\x04":
            raise refuse(
                path,
                "this is a PyTorch pickle/zip file renamed to .safetensors; pickled files can run code, "
                "so only real .safetensors files are accepted",
            )
        if header_len > MAX_HEADER_BYTES and header_len <= size - 8:
            raise refuse(
                path,
                f"its header is {header_len:,} bytes; a LoRA's header is at most {MAX_HEADER_BYTES:,} "
                "(a real one is under 1 MB)",
            )
        if not plausible:
            raise refuse(path, f"the header is truncated or corrupt: it claims {header_len} bytes, the file has {size}")
    header = _parse_header(path, raw)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise refuse(path, "the header's __metadata__ is corrupt (it must map names to strings)")
    if not header:
        raise refuse(path, "the file holds no tensors")
    if len(header) > MAX_TENSORS:
        raise refuse(path, f"it holds {len(header):,} tensors; a LoRA holds at most {MAX_TENSORS:,}")
    data_bytes = size - 8 - header_len
    claimed = 0
    for key, entry in header.items():
        claimed = max(claimed, _check_entry(path, key, entry))
    if claimed > MAX_FILE_BYTES:
        raise refuse(path, f"the header claims {_gb(claimed)} of weights; the limit is {_gb(MAX_FILE_BYTES)}")
    if claimed > data_bytes:
        raise refuse(
            path,
            f"the file is truncated or corrupt: its header claims {claimed} bytes of weights, it holds {data_bytes}",
        )
    return header, metadata


def _parse_header(path: Path, raw: bytes) -> dict[str, Any]:
    """The header's JSON, parsed once its size, depth, digits, names and list lengths are in bounds."""
    try:
        header = bounded_json.loads(raw, HEADER_LIMITS)
    except bounded_json.ListTooLong as error:
        if error.key == "shape" and error.owner is not None:
            raise refuse(
                path,
                f"tensor {bounded_json.echo(error.owner)} has {error.items:,} dimensions; "
                f"a LoRA weight has at most {MAX_DIMS}",
            ) from None
        raise refuse(path, f"the header is corrupt: {error}") from None
    except bounded_json.JsonLimitError as error:
        raise refuse(path, f"the header is refused: {error}") from None
    if not isinstance(header, dict):
        raise refuse(path, "the header is corrupt (not a JSON object)")
    return header


def _check_entry(path: Path, key: str, entry: Any) -> int:
    """One tensor's header entry checked; returns where its data ends."""
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise refuse(path, f"the header entry for {key!r} is corrupt")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPE_BYTES:
        raise refuse(
            path,
            f"tensor {key!r} has dtype {str(dtype)[:16]}; only {', '.join(DTYPE_BYTES)} are accepted",
        )
    valid_shape = isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)
    valid_offsets = isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
    if not valid_shape or not valid_offsets or not 0 <= offsets[0] <= offsets[1]:
        raise refuse(path, f"the header entry for {key!r} is corrupt")
    if len(shape) > MAX_DIMS:  # before the product below, which grows with the shape's length
        raise refuse(path, f"tensor {key!r} has {len(shape)} dimensions; a LoRA weight has at most {MAX_DIMS}")
    if offsets[1] - offsets[0] != math.prod(shape) * DTYPE_BYTES[dtype]:
        raise refuse(path, f"the header is corrupt: tensor {key!r} has the wrong byte length for its shape")
    return offsets[1]


def file_sha256(path: Path) -> str:
    """The file's sha256, streamed so a large file never sits in memory."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


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
        targets[name.removesuffix(".base_layer")] = (module.in_features, module.out_features)
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
    aliases = _aliases(targets)
    layout: dict[str, tuple[str, str]] = {}
    alpha_keys: dict[str, str] = {}
    unknown: list[str] = []
    kohya = peft = False
    for key in tensors:
        split = _split_key(key)
        if split is None:
            if "dora_scale" in key or "lora_magnitude_vector" in key:
                raise refuse(path, "DoRA adapters are not supported; only plain LoRA")
            if any(tag in key for tag in ("lokr_", "hada_", "loha_")):
                raise refuse(path, "LyCORIS (LoKr/LoHa) adapters are not supported; only plain LoRA")
            raise refuse(path, f"{key!r} is not a LoRA weight (lora_A/lora_B or lora_down/lora_up); not a LoRA file?")
        raw_module, role = split
        module = aliases.get(_strip_prefixes(raw_module))
        if module is None:
            unknown.append(raw_module)
            continue
        kohya |= raw_module.startswith("lora_unet_") or key.endswith(("lora_down.weight", "lora_up.weight"))
        peft |= raw_module.startswith("base_model.model.") or module != _strip_prefixes(raw_module)
        if role == "alpha":
            alpha_keys[module] = key
        else:
            layout[key] = (module, role)
    if unknown and not layout:
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
    config = read_adapter_config(path, adapter_config)
    if config.get("use_dora"):
        raise refuse(path, "DoRA adapters are not supported; only plain LoRA")
    alphas = _read_alphas(path, alpha_keys)
    default_alpha = _metadata_alpha(path, metadata)
    if default_alpha is None and config.get("lora_alpha") is not None:
        default_alpha = _number(path, "adapter_config lora_alpha", config["lora_alpha"])
    pattern = {str(k): _number(path, "alpha_pattern", v) for k, v in (config.get("alpha_pattern") or {}).items()}
    scales, stated = {}, []
    for module, rank in ranks.items():
        alpha = alphas.get(module, _pattern_alpha(module, pattern, default_alpha))
        if alpha is None:
            scales[module] = 1.0  # alpha = r, as diffusers assumes
            continue
        if not math.isfinite(alpha) or alpha <= 0:
            raise refuse(path, f"alpha {alpha} for layer {module!r} is not a positive number")
        stated.append(alpha)
        scales[module] = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
    return LoraInfo(
        path=path,
        sha256=file_sha256(path),
        size_bytes=path.stat().st_size,
        rank=max(ranks.values()),
        alpha=Counter(stated).most_common(1)[0][0] if stated else None,
        modules=len(ranks),
        key_format="kohya" if kohya else "peft" if peft else "diffusers",
        trigger_words=_metadata_triggers(metadata),
        layout=layout,
        scales=scales,
    )


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
