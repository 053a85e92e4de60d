"""An official LoRA as people hand it over: the pair ``adapter_model.safetensors`` +
``adapter_config.json`` (two files, or their folder as a zip), or the safetensors alone with
``lora_alpha`` typed by hand. The config's ``lora_alpha`` is what makes it play at the strength it
was trained at (alpha / r: the official trainer's r=8, alpha=16 is a scale of 2; diffusers would
take alpha = r). Official trainer: ``acestep/training/lora_utils.py`` saves the folder with PEFT's
``save_pretrained``.

Everything here is untrusted: a zip is read from its central directory with every count bounded
(members, names, sizes, compression ratio) and its two members copied out with the bytes counted
as they come, so a zip bomb stops at the limit; the config is parsed by ``bounded_json``.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import bounded_json
from lora.header import CONFIG_LIMITS, MAX_FILE_BYTES, LoraError

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"
MAX_ZIP_MEMBERS = 64  # a saved PEFT folder holds 2-4 files (README.md, training state)
MAX_ZIP_BYTES = MAX_FILE_BYTES + 16 * 1024**2
MAX_COMPRESSION_RATIO = 100  # safetensors of float weights barely compress; a bomb compresses 1000x
MAX_ALPHA = 10_000.0
COPY_CHUNK_BYTES = 1024**2


@dataclass(frozen=True)
class LoraUpload:
    weights: Path  # the .safetensors to check and add
    adapter_config: Mapping[str, Any] | None  # None: none given (the file's own metadata may state alpha)


def read_upload(paths: Sequence[str | Path], alpha: float | None = None, workdir: Path | None = None) -> LoraUpload:
    """The LoRA in what was uploaded: one ``.safetensors`` (with its ``adapter_config.json``, or
    ``alpha`` typed by hand), or one ``.zip`` of the saved folder. ``workdir`` receives a zip's
    weights. Raises ``LoraError`` in the user's words."""
    files = [Path(p) for p in paths if p]
    zips = [p for p in files if p.suffix.lower() == ".zip"]
    weights = [p for p in files if p.suffix.lower() == ".safetensors"]
    configs = [p for p in files if p.suffix.lower() == ".json"]
    if len(files) != len(zips) + len(weights) + len(configs):
        raise LoraError("lora: upload a .safetensors file, with its adapter_config.json, or their folder as a .zip")
    if zips:
        if len(files) > 1:
            raise LoraError("lora: upload the .zip on its own (it already holds the weights and the config)")
        weights_path, config_bytes = _from_zip(zips[0], workdir or Path(tempfile.mkdtemp(prefix="lora-")))
    else:
        if len(weights) != 1 or len(configs) > 1:
            raise LoraError("lora: upload one .safetensors file, and at most one adapter_config.json beside it")
        weights_path = weights[0]
        config_bytes = _read_config_file(configs[0]) if configs else None
    config = _parse_config(config_bytes) if config_bytes is not None else None
    if alpha is not None:
        if not math.isfinite(alpha) or not 0 < alpha <= MAX_ALPHA:
            raise LoraError(f"lora_alpha: must be a number above 0 and at most {MAX_ALPHA:g}, got {alpha!r}")
        config = {**(config or {}), "lora_alpha": float(alpha)}
    return LoraUpload(weights_path, config)


def _read_config_file(path: Path) -> bytes:
    if path.stat().st_size > CONFIG_LIMITS.max_bytes:
        raise LoraError(f"adapter_config.json: over {CONFIG_LIMITS.max_bytes:,} bytes; a real one is under 2 kB")
    return path.read_bytes()


def _parse_config(raw: bytes) -> dict[str, Any]:
    try:
        config = bounded_json.loads(raw, CONFIG_LIMITS)
    except ValueError as error:
        raise LoraError(f"adapter_config.json: not a config PEFT wrote ({error})") from None
    if not isinstance(config, dict):
        raise LoraError("adapter_config.json: not a JSON object")
    return config


def _from_zip(path: Path, workdir: Path) -> tuple[Path, bytes | None]:
    """The zip's ``adapter_model.safetensors`` (copied into ``workdir``) and its config's bytes."""
    if path.stat().st_size > MAX_ZIP_BYTES:
        raise LoraError(f"lora zip: over {MAX_ZIP_BYTES // 1024**2:,} MB")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > MAX_ZIP_MEMBERS:
                raise LoraError(f"lora zip: {len(members):,} files; a saved LoRA folder holds a few")
            wanted = {name: _member(members, name) for name in (WEIGHTS_NAME, CONFIG_NAME)}
            if wanted[WEIGHTS_NAME] is None:
                raise LoraError(f"lora zip: holds no {WEIGHTS_NAME}")
            target = workdir / WEIGHTS_NAME
            workdir.mkdir(parents=True, exist_ok=True)
            _copy_member(archive, wanted[WEIGHTS_NAME], target, MAX_FILE_BYTES)
            config = wanted[CONFIG_NAME]
            raw = None
            if config is not None:
                raw = _copy_member(archive, config, None, CONFIG_LIMITS.max_bytes)
            return target, raw
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError) as error:
        raise LoraError(f"lora zip: could not be read ({error})") from None


def _member(members: Sequence[zipfile.ZipInfo], name: str) -> zipfile.ZipInfo | None:
    """The one member named ``name`` at the top or one folder down (how a zipped folder looks)."""
    found = [m for m in members if PurePosixPath(m.filename).name == name and len(PurePosixPath(m.filename).parts) <= 2]
    if len(found) > 1:
        raise LoraError(f"lora zip: holds {name} {len(found)} times; zip one LoRA folder")
    if found and found[0].flag_bits & 0x1:
        raise LoraError("lora zip: is encrypted")
    return found[0] if found else None


def _copy_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path | None, limit: int) -> bytes | None:
    """Copy a member out, counting the bytes as they come (the sizes a zip states may lie)."""
    if member.file_size > limit:
        raise LoraError(f"lora zip: {member.filename} is over {limit:,} bytes")
    if member.compress_size and member.file_size / member.compress_size > MAX_COMPRESSION_RATIO:
        raise LoraError(f"lora zip: {member.filename} is compressed {MAX_COMPRESSION_RATIO}x or more; not a LoRA")
    chunks, total = [], 0
    with archive.open(member) as source, target.open("wb") if target else contextlib.nullcontext() as out:
        while chunk := source.read(COPY_CHUNK_BYTES):
            total += len(chunk)
            if total > limit or total > member.file_size:
                raise LoraError(f"lora zip: {member.filename} unpacks past its stated size")
            if target is None:
                chunks.append(chunk)
            else:
                out.write(chunk)  # type: ignore[union-attr]  # a file when target is given
    return b"".join(chunks) if target is None else None


def remove_workdir(upload: LoraUpload, workdir: Path) -> None:
    """Drop a zip's unpacked weights once the store holds its own copy."""
    if upload.weights.parent == workdir:
        shutil.rmtree(workdir, ignore_errors=True)
