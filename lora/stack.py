"""LoRA adapters for the DiT: checked from the file header, stored by content, stacked with weights.

``lora.check.inspect_lora`` refuses a bad file from its header alone. ``LoraStack`` copies
accepted files into a store named by their sha256, loads each into the transformer once
(diffusers' ``PeftAdapterMixin``, peft underneath) and switches the active set and weights
per run.

Accepted key formats (each maps onto the diffusers module names of the DiT):

- diffusers / PEFT-on-diffusers: ``transformer.layers.0.self_attn.to_q.lora_A.weight``
  (the ``transformer.`` prefix is optional);
- the original ACE-Step 1.5 trainer (PEFT ``save_pretrained`` of the DiT "decoder"), also
  written as one file by the ComfyUI trainers with a per-layer ``.alpha`` scalar:
  ``base_model.model.layers.0.self_attn.q_proj.lora_A.weight``;
- kohya style: ``lora_unet_layers_0_self_attn_q_proj.lora_down.weight`` / ``lora_up`` / ``.alpha``;
- a PEFT LoKr with its ``adapter_config.json`` (``peft_type`` LOKR), as ``training`` writes it
  (``…q_proj.lokr_w1``, ``lokr_w2`` or ``lokr_w2_a``/``_b``): checked by ``lora.lokr``, loaded
  by diffusers' ``load_lora_adapter`` (which builds peft's ``LoKrConfig`` from the shapes).

alpha/r: diffusers loads every adapter with alpha = r (scale 1) whatever the file says. When
a file states alpha (``.alpha`` scalars, ``lora_alpha`` in its metadata, or the PEFT
``adapter_config.json`` beside it) the scale alpha/r (alpha/sqrt(r) with ``use_rslora``) is
folded into ``lora_B`` as the state dict is loaded. Folding is exact per layer, needs no
``LoraConfig`` patterns for per-layer alphas, and cannot be applied twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lora.check import LoraInfo, check_trigger_words, check_weight, inspect_lora, read_adapter_config, target_modules
from lora.header import HASH_CHUNK_BYTES, LoraError, file_sha256, refuse
from validation import echo

STORE_SUBDIR = "loras"
SHA256_PREFIX = re.compile(r"[0-9a-f]{8,64}")


@dataclass(frozen=True)
class CheckedLora:
    """A file ``LoraStack.check`` accepted, ready for ``add_checked`` (under the run lock)."""

    info: LoraInfo
    name: str | None
    trigger_words: tuple[str, ...]
    adapter_config: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class LoraEntry:
    """One adapter loaded into the DiT, stored at ``path`` under its sha256."""

    name: str
    sha256: str
    adapter_name: str
    path: Path
    info: LoraInfo
    trigger_words: tuple[str, ...] = ()


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


def _unknown(key: str) -> LoraError:
    return LoraError(f"loras: no LoRA named or with sha256 {echo(key)} is loaded or in the store; add its file first")


def _safe_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "lora"
    return stem[:64]


class LoraStack:
    """The adapters loaded into one pipeline's DiT, and which of them are active at what weight.

    Thread-safety: every method that changes the DiT (``add``, ``add_checked``, ``resolve``,
    ``load_store``, ``apply``, ``restore``, ``remove``, ``clear``) must be called with the
    pipeline to itself (``with backend.exclusive():``), so no run is inside the transformer while
    its adapters change. ``check`` reads only the file: an untrusted upload is checked without
    the lock, so a bad file never holds up a run. The stack's own lock only keeps its
    bookkeeping consistent.
    """

    def __init__(self, pipeline_or_transformer, store_dir: Path | None = None) -> None:
        self.transformer = getattr(pipeline_or_transformer, "transformer", pipeline_or_transformer)
        if store_dir is None:
            from tools.tiny_model import default_cache_dir

            store_dir = default_cache_dir() / STORE_SUBDIR
        self.store_dir = Path(store_dir)
        self._targets = target_modules(self.transformer)  # taken once: files are checked without the DiT
        self._entries: dict[str, LoraEntry] = {}  # by sha256
        self._stack: list[tuple[str, float]] = []  # (sha256, weight), in the order applied
        self._lock = threading.RLock()

    @property
    def entries(self) -> list[LoraEntry]:
        return list(self._entries.values())

    def check(
        self,
        path: Path | str,
        name: str | None = None,
        trigger_words: Iterable[str] | None = None,
        adapter_config: Mapping[str, Any] | None = None,
    ) -> CheckedLora:
        """Check a file against this DiT from its header, and its sha256, without touching the DiT.

        Safe without the run lock: it reads only the file and the layer map taken when the stack
        was made. Raises ``LoraError``.
        """
        if name is not None and (not str(name).strip() or len(str(name)) > 100 or "\n" in str(name)):
            raise LoraError(f"lora name: one line of 1 to 100 characters, got {echo(str(name))}")
        info = inspect_lora(path, self._targets, adapter_config)
        words = check_trigger_words(trigger_words if trigger_words is not None else info.trigger_words)
        return CheckedLora(info, name, words, adapter_config)

    def add(
        self,
        path: Path | str,
        name: str | None = None,
        trigger_words: Iterable[str] | None = None,
        adapter_config: Mapping[str, Any] | None = None,
    ) -> LoraEntry:
        """Validate a file, keep a copy in the store and load it into the DiT (once per content)."""
        return self.add_checked(self.check(path, name, trigger_words, adapter_config))

    def add_checked(self, checked: CheckedLora) -> LoraEntry:
        """Keep a checked file in the store and load it into the DiT (once per content)."""
        info, name = checked.info, checked.name
        with self._lock:
            existing = self._entries.get(info.sha256)
            if existing is not None:
                # Same weights, but an adapter_config.json stating another alpha: not the same adapter.
                if dict(existing.info.scales) != dict(info.scales):
                    raise LoraError(
                        f"LoRA {existing.name!r} is already loaded with another alpha; remove it to load it again"
                    )
                return existing
            stored = self._store(
                info, _safe_stem(name or info.path.stem), checked.adapter_config, checked.trigger_words
            )
            display = name or info.path.stem
            if any(e.name == display for e in self._entries.values()):
                display = f"{display} ({info.sha256[:8]})"
            entry = LoraEntry(display, info.sha256, f"lora_{info.sha256[:16]}", stored, info, checked.trigger_words)
            self._load(entry)
            self._entries[info.sha256] = entry
            self._activate()
            return entry

    def keep(self, checked: CheckedLora) -> Path:
        """Keep a checked file in the store without loading it (the studio loads it when it is
        listed or used): for a process that made the file and is not the studio."""
        info = checked.info
        return self._store(
            info, _safe_stem(checked.name or info.path.stem), checked.adapter_config, checked.trigger_words
        )

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
                raise refuse(info.path, "the file changed while it was being added; add it again")
            config = dict(read_adapter_config(info.path, adapter_config))
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
            raise refuse(entry.path, f"the weights could not be read ({error})") from None
        dtype = self.transformer.dtype
        lokr = entry.info.kind == "lokr"
        # The scale goes into one matrix: lora_B of a LoRA, the first Kronecker factor of a LoKr (linear in
        # each); diffusers then loads either with alpha = r (a LoKr's config inferred from its shapes).
        scaled = ("w1", "w1_a") if lokr else ("B",)
        state_dict = {}
        for key, (module, role) in entry.info.layout.items():
            tensor = tensors[key]
            scale = entry.info.scales[module]
            if role in scaled and scale != 1.0:
                tensor = tensor.float() * scale
            state_dict[f"{module}.lokr_{role}" if lokr else f"{module}.lora_{role}.weight"] = tensor.to(dtype)
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
        raise LoraError(f"LoRA {echo(key)} is not loaded; add its file first")

    def resolve(self, key: str) -> LoraEntry:
        """The entry for a ``loras`` item's key: loaded already, or loaded now from the store.

        Only a loaded name or a hex sha256 prefix (8 to 64 characters) is looked up; any other
        text (a path, a glob pattern) is refused before the store is read.
        """
        key = str(key)
        try:
            return self.find(key)
        except LoraError:
            pass
        prefix = key.lower()
        if not SHA256_PREFIX.fullmatch(prefix) or not self.store_dir.is_dir():
            raise _unknown(key)
        # The store names files by the first 16 characters of their sha256 (see _store).
        for side in sorted(self.store_dir.glob(f"{prefix[:16]}*.json")):
            saved = json.loads(side.read_text(encoding="utf-8"))
            if not str(saved.get("sha256", "")).startswith(prefix):
                continue
            return self.add(
                side.with_suffix(".safetensors"),
                name=saved["name"],
                trigger_words=saved["trigger_words"],
                adapter_config=saved["adapter_config"],
            )
        raise _unknown(key)

    def load_store(self) -> list[LoraEntry]:
        """Every LoRA in the store, loaded (those added in earlier sessions too)."""
        if self.store_dir.is_dir():
            for side in sorted(self.store_dir.glob("*.json")):
                if SHA256_PREFIX.fullmatch(side.name[:16]):
                    self.resolve(side.name[:16])
        return self.entries

    def apply(self, entries: Sequence[tuple[str, float]]) -> None:
        """Make exactly ``entries`` (name or sha256, weight 0-2) the active stack; ``[]`` turns LoRA off."""
        resolved: list[tuple[str, float]] = []
        for key, weight in entries:
            value = check_weight(key, weight)
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
            check_weight(name, item.get("weight", 1.0))
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
