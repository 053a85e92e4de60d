"""LoRA adapters for the DiT: checked from the file header, stored by content, stacked with weights.

``inspect_lora`` refuses a file before a byte of its tensors is read: pickles, oversized or
corrupt headers, unknown dtypes, layers this DiT lacks, shapes that do not fit, ranks above
``MAX_RANK``. ``LoraStack`` copies accepted files into a store named by their sha256, loads
each into the transformer once (diffusers' ``PeftAdapterMixin``, peft underneath) and switches
the active set and weights per run.

Accepted key formats (each maps onto the diffusers module names of the DiT):

- diffusers / PEFT-on-diffusers: ``transformer.layers.0.self_attn.to_q.lora_A.weight``
  (the ``transformer.`` prefix is optional);
- the original ACE-Step 1.5 trainer (PEFT ``save_pretrained`` of the DiT "decoder"), also
  written as one file by the ComfyUI trainers with a per-layer ``.alpha`` scalar:
  ``base_model.model.layers.0.self_attn.q_proj.lora_A.weight``;
- kohya style: ``lora_unet_layers_0_self_attn_q_proj.lora_down.weight`` / ``lora_up`` / ``.alpha``.

alpha/r: diffusers loads every adapter with alpha = r (scale 1) whatever the file says. When
a file states alpha (``.alpha`` scalars, ``lora_alpha`` in its metadata, or the PEFT
``adapter_config.json`` beside it) the scale alpha/r (alpha/sqrt(r) with ``use_rslora``) is
folded into ``lora_B`` as the state dict is loaded. Folding is exact per layer, needs no
``LoraConfig`` patterns for per-layer alphas, and cannot be applied twice.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import tempfile
import threading
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_FILE_BYTES = 1024**3  # 1 GiB: real ACE-Step LoRAs are 20-400 MB
MAX_HEADER_BYTES = 100 * 1024**2  # safetensors' own limit
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


@dataclass(frozen=True)
class LoraEntry:
    """One adapter loaded into the DiT, stored at ``path`` under its sha256."""

    name: str
    sha256: str
    adapter_name: str
    path: Path
    info: LoraInfo
    trigger_words: tuple[str, ...] = ()


def _refuse(path: Path, why: str) -> LoraError:
    return LoraError(f"LoRA file {path.name}: {why}")


def _gb(size: float) -> str:
    return f"{size / 1024**3:.1f} GB"


def read_safetensors_header(path: Path) -> tuple[dict[str, dict], dict[str, str]]:
    """Parse and check a safetensors header without reading any tensor data.

    Returns (tensors, metadata). Raises ``LoraError`` for pickles, oversized, truncated or
    corrupt files and unknown dtypes.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise _refuse(path, "pickled files can run code; only .safetensors is accepted")
    if suffix != ".safetensors":
        raise _refuse(path, f"only .safetensors files are accepted, got a {suffix or 'file without extension'}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise _refuse(path, f"the file is {_gb(size)}; the limit is {_gb(MAX_FILE_BYTES)}")
    with path.open("rb") as handle:
        head = handle.read(8)
        if not head:
            raise _refuse(path, "the file is empty")
        header_len = struct.unpack("<Q", head)[0] if len(head) == 8 else size
        plausible = header_len <= min(MAX_HEADER_BYTES, size - 8)
        raw = handle.read(header_len) if plausible else b""
    # A real header's length can begin with the same bytes as a pickle, so the magic numbers
    # are only read once the file has failed to look like safetensors.
    if not raw.startswith(b"{"):
        if (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")) or head[:4] == b"PK\x03\x04":
            raise _refuse(
                path,
                "this is a PyTorch pickle/zip file renamed to .safetensors; pickled files can run code, "
                "so only real .safetensors files are accepted",
            )
        if not plausible:
            raise _refuse(
                path, f"the header is truncated or corrupt: it claims {header_len} bytes, the file has {size}"
            )
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _refuse(path, f"the header is corrupt (not valid JSON: {error})") from None
    if not isinstance(header, dict):
        raise _refuse(path, "the header is corrupt (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _refuse(path, "the header's __metadata__ is corrupt (it must map names to strings)")
    if not header:
        raise _refuse(path, "the file holds no tensors")
    data_bytes = size - 8 - header_len
    claimed = 0
    for key, entry in header.items():
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            raise _refuse(path, f"the header entry for {key!r} is corrupt")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPE_BYTES:
            raise _refuse(path, f"tensor {key!r} has dtype {dtype}; only {', '.join(DTYPE_BYTES)} are accepted")
        valid_shape = isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)
        valid_offsets = isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
        if not valid_shape or not valid_offsets or not 0 <= offsets[0] <= offsets[1]:
            raise _refuse(path, f"the header entry for {key!r} is corrupt")
        if offsets[1] - offsets[0] != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise _refuse(path, f"the header is corrupt: tensor {key!r} has the wrong byte length for its shape")
        claimed = max(claimed, offsets[1])
    if claimed > MAX_FILE_BYTES:
        raise _refuse(path, f"the header claims {_gb(claimed)} of weights; the limit is {_gb(MAX_FILE_BYTES)}")
    if claimed > data_bytes:
        raise _refuse(
            path,
            f"the file is truncated or corrupt: its header claims {claimed} bytes of weights, it holds {data_bytes}",
        )
    return header, metadata


def file_sha256(path: Path) -> str:
    """The file's sha256, streamed so a large file never sits in memory."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _target_modules(transformer) -> dict[str, tuple[int, int]]:
    """The DiT's linear layers, name -> (in_features, out_features), seen through peft wrappers."""
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


def _read_adapter_config(path: Path, adapter_config: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if adapter_config is not None:
        return adapter_config
    beside = path.with_name("adapter_config.json")
    if not beside.is_file():
        return {}
    try:
        config = json.loads(beside.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise _refuse(path, f"adapter_config.json beside it could not be read ({error})") from None
    if not isinstance(config, dict):
        raise _refuse(path, "adapter_config.json beside it is not a JSON object")
    return config


def _number(path: Path, what: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _refuse(path, f"its {what} is not a number, got {value!r}") from None


def _metadata_alpha(path: Path, metadata: Mapping[str, str]) -> float | None:
    for key in ("lora_alpha", "ss_network_alpha"):
        if key in metadata:
            return _number(path, f"metadata {key}", metadata[key])
    if "lora_adapter_metadata" in metadata:  # what diffusers' save_lora_weights writes
        try:
            stated = json.loads(metadata["lora_adapter_metadata"])
        except ValueError:
            raise _refuse(path, "its lora_adapter_metadata is not valid JSON") from None
        for key, value in stated.items() if isinstance(stated, dict) else ():
            if key.split(".")[-1] == "lora_alpha":
                return _number(path, "lora_alpha", value)
    return None


def _metadata_triggers(metadata: Mapping[str, str]) -> tuple[str, ...]:
    text = metadata.get("trigger_words") or metadata.get("modelspec.trigger_phrase") or ""
    try:
        words = json.loads(text) if text.startswith("[") else text.split(",")
    except ValueError:
        words = text.split(",")
    return tuple(str(w).strip() for w in words if str(w).strip())


def inspect_lora(path: Path | str, transformer, adapter_config: Mapping[str, Any] | None = None) -> LoraInfo:
    """Check a LoRA file against ``transformer`` (the loaded DiT) and describe it.

    The structure is checked from the safetensors header alone; only the few ``.alpha``
    scalars are read from the data. ``adapter_config`` overrides the PEFT
    ``adapter_config.json`` looked for beside the file. Raises ``LoraError``.
    """
    path = Path(path)
    if not path.is_file():
        raise LoraError(f"LoRA file {path} does not exist")
    tensors, metadata = read_safetensors_header(path)
    targets = _target_modules(transformer)
    aliases = _aliases(targets)
    layout: dict[str, tuple[str, str]] = {}
    alpha_keys: dict[str, str] = {}
    unknown: list[str] = []
    kohya = peft = False
    for key in tensors:
        split = _split_key(key)
        if split is None:
            if "dora_scale" in key or "lora_magnitude_vector" in key:
                raise _refuse(path, "DoRA adapters are not supported; only plain LoRA")
            if any(tag in key for tag in ("lokr_", "hada_", "loha_")):
                raise _refuse(path, "LyCORIS (LoKr/LoHa) adapters are not supported; only plain LoRA")
            raise _refuse(path, f"{key!r} is not a LoRA weight (lora_A/lora_B or lora_down/lora_up); not a LoRA file?")
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
        raise _refuse(
            path,
            f"these are files for another model: none of its layers (e.g. {unknown[0]!r}) exist in the "
            "ACE-Step 1.5 DiT (a LoRA for Stable Diffusion, FLUX or ACE-Step v1?)",
        )
    if unknown:
        raise _refuse(
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
            raise _refuse(path, f"layer {module!r} has only one of its two LoRA matrices")
        a, b = pair["A"], pair["B"]
        if len(a) != 2 or len(b) != 2:
            raise _refuse(path, f"wrong shapes for layer {module!r}: LoRA matrices must be 2-D, got {a} and {b}")
        rank = a[0]
        if rank > MAX_RANK:
            raise _refuse(path, f"rank {rank} at layer {module!r} is above the limit of {MAX_RANK}")
        in_features, out_features = targets[module]
        if rank < 1 or b[1] != rank or a[1] != in_features or b[0] != out_features:
            raise _refuse(
                path,
                f"wrong shapes for layer {module!r}: lora_A {a} and lora_B {b} do not fit its "
                f"{in_features} inputs and {out_features} outputs (made for another size of ACE-Step, e.g. XL vs 2B?)",
            )
        ranks[module] = rank
    config = _read_adapter_config(path, adapter_config)
    if config.get("use_dora"):
        raise _refuse(path, "DoRA adapters are not supported; only plain LoRA")
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
            raise _refuse(path, f"alpha {alpha} for layer {module!r} is not a positive number")
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
            raise _refuse(path, f"the alpha of layer {module!r} is not a single number")
    return {module: float(value.reshape(())) for module, value in values.items()}


def _check_trigger_words(words: Iterable[str]) -> tuple[str, ...]:
    cleaned = tuple(str(word).strip() for word in words if str(word).strip())
    if len(cleaned) > MAX_TRIGGER_WORDS:
        raise LoraError(f"trigger_words: at most {MAX_TRIGGER_WORDS}, got {len(cleaned)}")
    for word in cleaned:
        if len(word) > MAX_TRIGGER_CHARS or "\n" in word:
            raise LoraError(f"trigger_words: one line of at most {MAX_TRIGGER_CHARS} characters each, got {word!r}")
    return cleaned


def prompt_with_triggers(prompt: str, entries: Iterable[LoraEntry | Mapping[str, Any]]) -> str:
    """``prompt`` with the trigger words of ``entries`` appended (those not in it already).

    ``entries`` are ``LoraEntry`` objects or ``describe()`` dicts; dicts with weight 0 add nothing.
    """
    words: list[str] = []
    for entry in entries:
        if isinstance(entry, Mapping):
            if float(entry.get("weight", 1.0)) == 0:
                continue
            words.extend(entry.get("trigger_words") or ())
        else:
            words.extend(entry.trigger_words)
    lowered = prompt.lower()
    missing = []
    for word in words:
        if word.lower() not in lowered and word.lower() not in (m.lower() for m in missing):
            missing.append(word)
    if not missing:
        return prompt
    return ", ".join([prompt.rstrip().rstrip(","), *missing]) if prompt.strip() else ", ".join(missing)


def _safe_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "lora"
    return stem[:64]


def _check_weight(key: str, weight: Any) -> float:
    try:
        value = float(weight)
    except (TypeError, ValueError):
        raise LoraError(f"lora weight for {key!r}: must be a number from 0 to {MAX_WEIGHT:g}, got {weight!r}") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_WEIGHT:
        raise LoraError(f"lora weight for {key!r}: must be from 0 to {MAX_WEIGHT:g}, got {weight!r}")
    return value


class LoraStack:
    """The adapters loaded into one pipeline's DiT, and which of them are active at what weight.

    Thread-safety: every method that changes the DiT (``add``, ``apply``, ``restore``,
    ``remove``, ``clear``) must be called with the backend's run lock held
    (``Backend._run_lock``), so no run is inside the transformer while its adapters change.
    The stack's own lock only keeps its bookkeeping consistent.
    """

    def __init__(self, pipeline_or_transformer, store_dir: Path | None = None) -> None:
        self.transformer = getattr(pipeline_or_transformer, "transformer", pipeline_or_transformer)
        if store_dir is None:
            from tiny_model import default_cache_dir

            store_dir = default_cache_dir() / STORE_SUBDIR
        self.store_dir = Path(store_dir)
        self._entries: dict[str, LoraEntry] = {}  # by sha256
        self._stack: list[tuple[str, float]] = []  # (sha256, weight), in the order applied
        self._lock = threading.RLock()

    @property
    def entries(self) -> list[LoraEntry]:
        return list(self._entries.values())

    def add(
        self,
        path: Path | str,
        name: str | None = None,
        trigger_words: Iterable[str] | None = None,
        adapter_config: Mapping[str, Any] | None = None,
    ) -> LoraEntry:
        """Validate a file, keep a copy in the store and load it into the DiT (once per content)."""
        if name is not None and (not str(name).strip() or len(str(name)) > 100 or "\n" in str(name)):
            raise LoraError(f"lora name: one line of 1 to 100 characters, got {name!r}")
        info = inspect_lora(path, self.transformer, adapter_config)
        with self._lock:
            existing = self._entries.get(info.sha256)
            if existing is not None:
                # Same weights, but an adapter_config.json stating another alpha: not the same adapter.
                if dict(existing.info.scales) != dict(info.scales):
                    raise LoraError(
                        f"LoRA {existing.name!r} is already loaded with another alpha; remove it to load it again"
                    )
                return existing
            words = _check_trigger_words(trigger_words if trigger_words is not None else info.trigger_words)
            stored = self._store(info, _safe_stem(name or info.path.stem), adapter_config, words)
            display = name or info.path.stem
            if any(e.name == display for e in self._entries.values()):
                display = f"{display} ({info.sha256[:8]})"
            entry = LoraEntry(display, info.sha256, f"lora_{info.sha256[:16]}", stored, info, words)
            self._load(entry)
            self._entries[info.sha256] = entry
            self._activate()
            return entry

    def _store(
        self, info: LoraInfo, stem: str, adapter_config: Mapping[str, Any] | None, words: tuple[str, ...]
    ) -> Path:
        """Copy the file to ``<store>/<sha256[:16]>-<stem>.safetensors`` unless the content is there."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        existing = self._stored(info.sha256)
        if existing is not None:
            return existing
        target = self.store_dir / f"{info.sha256[:16]}-{stem}.safetensors"
        digest = hashlib.sha256()
        handle, staging = tempfile.mkstemp(prefix=".lora-", dir=self.store_dir)
        try:
            with os.fdopen(handle, "wb") as out, info.path.open("rb") as source:
                while chunk := source.read(HASH_CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != info.sha256:
                raise _refuse(info.path, "the file changed while it was being added; add it again")
            config = dict(_read_adapter_config(info.path, adapter_config))
            side = {"sha256": info.sha256, "name": stem, "trigger_words": list(words), "adapter_config": config}
            target.with_suffix(".json").write_text(json.dumps(side, indent=2), encoding="utf-8")
            os.replace(staging, target)
        finally:
            if os.path.exists(staging):
                os.unlink(staging)
        return target

    def _stored(self, sha256: str) -> Path | None:
        for candidate in sorted(self.store_dir.glob(f"{sha256[:16]}-*.safetensors")):
            if file_sha256(candidate) == sha256:
                return candidate
        return None

    def _load(self, entry: LoraEntry) -> None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(entry.path))
        except (SafetensorError, OSError) as error:
            raise _refuse(entry.path, f"the weights could not be read ({error})") from None
        dtype = self.transformer.dtype
        state_dict = {}
        for key, (module, role) in entry.info.layout.items():
            tensor = tensors[key]
            scale = entry.info.scales[module]
            if role == "B" and scale != 1.0:
                tensor = tensor.float() * scale
            state_dict[f"{module}.lora_{role}.weight"] = tensor.to(dtype)
        with warnings.catch_warnings():
            # peft warns whenever a second adapter joins a model; stacking several is the point here.
            warnings.filterwarnings("ignore", message="Already found a `peft_config`", category=UserWarning)
            if entry.adapter_name in getattr(self.transformer, "peft_config", {}):
                self.transformer.delete_adapters(entry.adapter_name)  # left by another stack on this DiT
            self.transformer.load_lora_adapter(state_dict, adapter_name=entry.adapter_name, prefix=None)

    def find(self, key: str) -> LoraEntry:
        """The loaded entry named ``key``, or whose sha256 is or starts with ``key`` (8+ characters)."""
        key = str(key)
        with self._lock:
            for entry in self._entries.values():
                if key == entry.name or key == entry.sha256 or (len(key) >= 8 and entry.sha256.startswith(key)):
                    return entry
        raise LoraError(f"LoRA {key!r} is not loaded; add its file first")

    def apply(self, entries: Sequence[tuple[str, float]]) -> None:
        """Make exactly ``entries`` (name or sha256, weight 0-2) the active stack; ``[]`` turns LoRA off."""
        resolved: list[tuple[str, float]] = []
        for key, weight in entries:
            value = _check_weight(key, weight)
            entry = self.find(key)
            if any(sha == entry.sha256 for sha, _ in resolved):
                raise LoraError(f"LoRA {entry.name!r} is listed twice in the stack")
            resolved.append((entry.sha256, value))
        with self._lock:
            self._stack = resolved
            self._activate()

    def _activate(self) -> None:
        active = [(self._entries[sha].adapter_name, w) for sha, w in self._stack if w > 0]
        if not getattr(self.transformer, "peft_config", None):
            return
        if not active:
            # Disabled adapters leave the base layers alone: output is the no-LoRA output, bit for bit.
            self.transformer.disable_lora()
            return
        self.transformer.enable_lora()
        self.transformer.set_adapters([a for a, _ in active], [w for _, w in active])

    def describe(self) -> list[dict[str, Any]]:
        """The stack as settings.json keeps it: name, sha256, weight, trigger_words."""
        with self._lock:
            return [
                {
                    "name": self._entries[sha].name,
                    "sha256": sha,
                    "weight": weight,
                    "trigger_words": list(self._entries[sha].trigger_words),
                }
                for sha, weight in self._stack
            ]

    def restore(self, described: Sequence[Mapping[str, Any]]) -> None:
        """Re-apply a stack saved by ``describe()``, loading each file from the store by sha256.

        Everything is checked before anything loads, so a refused stack leaves the current one as it was.
        """
        stack, missing = [], []
        for item in described:
            sha, name = str(item.get("sha256", "")), str(item.get("name", "?"))
            if not re.fullmatch(r"[0-9a-f]{64}", sha):
                raise LoraError(f"LoRA {name!r}: the saved settings hold no valid sha256, got {sha!r}")
            _check_weight(name, item.get("weight", 1.0))
            stored = None
            if sha not in self._entries:
                stored = self._stored(sha) if self.store_dir.is_dir() else None
                if stored is None:
                    raise LoraError(
                        f"LoRA {name!r} (sha256 {sha[:16]}…) is not in the LoRA store {self.store_dir}; "
                        "add its file again to use these settings"
                    )
                missing.append((stored, name, item.get("trigger_words")))
            stack.append((sha, item.get("weight", 1.0)))
        for stored, name, words in missing:
            side = json.loads(stored.with_suffix(".json").read_text(encoding="utf-8"))
            self.add(stored, name=name, trigger_words=words, adapter_config=side["adapter_config"])
        self.apply(stack)

    def remove(self, key: str) -> None:
        """Unload one adapter from the DiT (its file stays in the store)."""
        entry = self.find(key)
        with self._lock:
            self._stack = [(sha, w) for sha, w in self._stack if sha != entry.sha256]
            with warnings.catch_warnings():
                # peft names a new active adapter; _activate() below sets the real active set.
                warnings.filterwarnings("ignore", message="Adapter .* was active", category=UserWarning)
                self.transformer.delete_adapters(entry.adapter_name)
            del self._entries[entry.sha256]
            self._activate()

    def clear(self) -> None:
        """Unload every adapter: the DiT computes exactly what it did before any was added."""
        with self._lock:
            for key in [e.sha256 for e in self._entries.values()]:
                self.remove(key)

    def prompt_with_triggers(self, prompt: str) -> str:
        """``prompt`` with the trigger words of the active (weight > 0) adapters appended."""
        return prompt_with_triggers(prompt, self.describe())
