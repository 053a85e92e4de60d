"""A LoRA file's safetensors header, read and checked within bounds before anything else.

Every count in the header (its length, tensors, dimensions per tensor, names, digits, nesting)
is bounded before or while it is parsed, so the check of a stranger's file takes time and
memory linear in its own limits; no tensor data is read and nothing in the file is executed.
"""

from __future__ import annotations

import hashlib
import math
import struct
from pathlib import Path
from typing import Any

import bounded_json
from validation import echo

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
HASH_CHUNK_BYTES = 1024**2
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}


class LoraError(ValueError):
    """A LoRA file or stack request was refused; the message says why, in plain words."""


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
                f"tensor {echo(error.owner)} has {error.items:,} dimensions; a LoRA weight has at most {MAX_DIMS}",
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
