"""A training dataset: a folder of songs, each with its caption, lyrics, language and optional bpm/key.

Two layouts are read:

- ACE-Step v1's converter layout, as is: ``name.mp3`` (or .wav/.flac/.ogg) beside ``name_prompt.txt``
  (the caption) and ``name_lyrics.txt`` (optional; none means instrumental);
- a manifest, ``dataset.json`` (a list of objects) or ``dataset.csv`` (a header row), with the fields
  ``audio`` (a file name inside the folder), ``caption``, ``lyrics``, ``language``, ``bpm``, ``keyscale``.

Everything is untrusted: the manifest is size-bounded before it is parsed, every text field has
its limit, audio paths may not leave the folder, and every clip goes through the studio's audio
intake (``audio_io.load_audio``: header first, decode bounded by length) before any model time.
``check_dataset`` names every bad clip and why, all at once, so one pass fixes the folder.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import bounded_json
from audio_io import ACCEPTED_FORMATS, AudioInputError, LoadedAudio, load_audio
from validation import (
    KEYSCALES,
    LANGUAGE_CHOICE_HINT,
    MAX_BPM,
    MAX_LYRICS_CHARS,
    MAX_PROMPT_CHARS,
    MIN_BPM,
    VOCAL_LANGUAGES,
    check_text,
    echo,
    normalise_keyscale,
)

MIN_CLIP_S = 5.0  # shorter gives the DiT a handful of latent frames: nothing of a style to learn
MAX_CLIP_S = 240.0  # the official trainer's max_duration (acestep/training/data_module.py)
MAX_CLIPS = 1_000
MAX_MANIFEST_BYTES = 4 * 1024**2
MAX_TEXT_FILE_BYTES = 64 * 1024  # a caption or lyrics file; lyrics are at most 8,000 characters
SILENCE_DBFS = -60.0  # a clip whose RMS is below this over its whole length is silence
AUDIO_SUFFIXES = tuple(f".{name.lower()}" for name in ACCEPTED_FORMATS)
MANIFEST_NAMES = ("dataset.json", "dataset.csv")
MANIFEST_FIELDS = ("audio", "caption", "lyrics", "language", "bpm", "keyscale")
INSTRUMENTAL = "[Instrumental]"  # what the official scanner gives a song without a lyrics file
MANIFEST_LIMITS = bounded_json.JsonLimits(
    max_bytes=MAX_MANIFEST_BYTES,
    max_depth=3,
    max_names=MAX_CLIPS * len(MANIFEST_FIELDS),
    max_values=MAX_CLIPS * (len(MANIFEST_FIELDS) + 1),
    max_list_items=MAX_CLIPS,
    max_strings=MAX_CLIPS * len(MANIFEST_FIELDS) * 2,
)


class DatasetError(ValueError):
    """A dataset the trainer will not use; the message names each clip and what is wrong with it."""


@dataclass(frozen=True)
class Clip:
    """One song of the dataset, its texts checked; the audio is checked by ``check_dataset``."""

    audio: Path
    caption: str
    lyrics: str = INSTRUMENTAL
    language: str = "unknown"
    bpm: int | None = None
    keyscale: str = ""

    @property
    def name(self) -> str:
        return self.audio.name


def read_dataset(folder: str | Path) -> list[Clip]:
    """The clips of a dataset folder: its manifest if it has one, else the v1 three-file layout.
    Raises ``DatasetError`` listing every clip whose texts are wrong."""
    return clips_from_rows(Path(folder), dataset_rows(folder))


def dataset_rows(folder: str | Path) -> list[dict[str, Any]]:
    """A dataset folder's rows as written, texts not yet checked (a row whose text file could not be
    read carries its refusal under ``error``): for a table the user completes before the check."""
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"dataset: {echo(str(folder))} is not a folder")
    manifests = [root / name for name in MANIFEST_NAMES if (root / name).is_file()]
    if len(manifests) > 1:
        raise DatasetError("dataset: holds both dataset.json and dataset.csv; keep one")
    rows = _manifest_rows(manifests[0]) if manifests else _v1_rows(root)
    if not rows:
        raise DatasetError(
            f"dataset: no songs found; put {'/'.join(AUDIO_SUFFIXES)} files with a name_prompt.txt "
            "caption beside each, or a dataset.json / dataset.csv"
        )
    if len(rows) > MAX_CLIPS:
        raise DatasetError(f"dataset: {len(rows):,} songs; the limit is {MAX_CLIPS:,}")
    return rows


def clips_from_rows(root: Path, rows: Sequence[Mapping[str, Any]]) -> list[Clip]:
    """The clips of manifest-like rows (``MANIFEST_FIELDS``) whose audio lies in ``root``, every
    text checked; raises ``DatasetError`` naming each bad row and why, all at once."""
    if len(rows) > MAX_CLIPS:
        raise DatasetError(f"dataset: {len(rows):,} songs; the limit is {MAX_CLIPS:,}")
    clips, problems = [], []
    for index, row in enumerate(rows):
        try:
            clips.append(_clip(root, row))
        except DatasetError as error:
            problems.append(f"{_row_name(row, index)}: {error}")
    if problems:
        raise DatasetError("dataset: " + "; ".join(problems))
    return clips


def _row_name(row: Mapping[str, Any], index: int) -> str:
    audio = row.get("audio")
    return echo(str(audio)) if isinstance(audio, str) and audio else f"song {index + 1}"


def _read_text(path: Path) -> str:
    if path.stat().st_size > MAX_TEXT_FILE_BYTES:
        raise DatasetError(f"{path.name} is over {MAX_TEXT_FILE_BYTES // 1024} kB; a caption or lyrics is far shorter")
    try:
        return path.read_text(encoding="utf-8-sig").strip()
    except UnicodeDecodeError:
        raise DatasetError(f"{path.name} is not UTF-8 text") from None


def _v1_rows(root: Path) -> list[dict[str, Any]]:
    """ACE-Step v1's layout: ``name.ext`` + ``name_prompt.txt`` (+ ``name_lyrics.txt``)."""
    rows: list[dict[str, Any]] = []
    for audio in sorted(root.iterdir()):
        if audio.suffix.lower() not in AUDIO_SUFFIXES or not audio.is_file():
            continue
        prompt = audio.with_name(f"{audio.stem}_prompt.txt")
        lyrics = audio.with_name(f"{audio.stem}_lyrics.txt")
        row: dict[str, Any] = {"audio": audio.name}
        try:
            row["caption"] = _read_text(prompt) if prompt.is_file() else ""
            row["lyrics"] = _read_text(lyrics) if lyrics.is_file() else INSTRUMENTAL
        except DatasetError as error:
            row["error"] = str(error)
        rows.append(row)
        if len(rows) > MAX_CLIPS:
            break
    return rows


def _manifest_rows(path: Path) -> list[dict[str, Any]]:
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise DatasetError(f"{path.name}: over {MAX_MANIFEST_BYTES // 1024**2} MB")
    raw = path.read_bytes()
    if path.suffix == ".json":
        try:
            rows = bounded_json.loads(raw, MANIFEST_LIMITS)
        except ValueError as error:
            raise DatasetError(f"{path.name}: not a list of songs ({error})") from None
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise DatasetError(f"{path.name}: must be a JSON list of objects, one per song")
    else:
        try:
            text = raw.decode("utf-8-sig")
            # read no further than one row past the limit: 4 MB of one-letter lines are two million rows
            rows = list(itertools.islice(csv.DictReader(io.StringIO(text)), MAX_CLIPS + 1))
        except (UnicodeDecodeError, csv.Error) as error:
            raise DatasetError(f"{path.name}: not a UTF-8 CSV with a header row ({error})") from None
        if len(rows) > MAX_CLIPS:
            raise DatasetError(f"{path.name}: over {MAX_CLIPS:,} songs; the limit is {MAX_CLIPS:,}")
    for row in rows:
        unknown = sorted(str(key) for key in row if key not in MANIFEST_FIELDS)
        if unknown:
            raise DatasetError(
                f"{path.name}: unknown field {echo(unknown[0])}; the fields are {', '.join(MANIFEST_FIELDS)}"
            )
    return rows


def _clip(root: Path, row: Mapping[str, Any]) -> Clip:
    if "error" in row:
        raise DatasetError(row["error"])
    audio = row.get("audio")
    if not isinstance(audio, str) or not audio.strip():
        raise DatasetError("audio: name the song's file")
    check_text("audio", audio, 255)
    path = (root / audio).resolve()
    if path.parent != root.resolve():
        raise DatasetError(f"audio: {echo(audio)} must be a file name inside the dataset folder")
    caption = _text(row, "caption", MAX_PROMPT_CHARS)
    if not caption:
        raise DatasetError("no caption: describe the song (genre, instruments, mood) in its caption or name_prompt.txt")
    lyrics = _text(row, "lyrics", MAX_LYRICS_CHARS) or INSTRUMENTAL
    language = _text(row, "language", 20) or "unknown"
    if language not in VOCAL_LANGUAGES:
        raise DatasetError(f"language: {echo(language)} is not one ACE-Step knows; {LANGUAGE_CHOICE_HINT}")
    keyscale = _text(row, "keyscale", 100)
    if keyscale:
        keyscale = normalise_keyscale(keyscale)
        if keyscale not in KEYSCALES:
            raise DatasetError(f"keyscale: {echo(keyscale)} is not a key, e.g. 'A minor' or 'F# major'")
    return Clip(path, caption, lyrics, language, _bpm(row.get("bpm")), keyscale)


def _text(row: Mapping[str, Any], name: str, limit: int) -> str:
    value = row.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DatasetError(f"{name}: must be text, got {echo(value)}")
    try:
        check_text(name, value, limit)
    except ValueError as error:
        raise DatasetError(str(error)) from None
    return value.strip()


def _bpm(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        bpm = float(value)
    except (TypeError, ValueError):
        raise DatasetError(f"bpm: must be a number, got {echo(value)}") from None
    if not math.isfinite(bpm) or not MIN_BPM <= bpm <= MAX_BPM or bpm != int(bpm):
        raise DatasetError(f"bpm: a whole number from {MIN_BPM} to {MAX_BPM}, got {echo(value)}")
    return int(bpm)


def rms_dbfs(audio: np.ndarray) -> float:
    """The clip's RMS level over its whole length, in dBFS (-inf for digital silence)."""
    power = float(np.mean(np.square(audio, dtype=np.float64)))
    return 10 * math.log10(power) if power > 0 else -math.inf


def check_clip(clip: Clip) -> LoadedAudio:
    """Decode one clip through the studio's intake (float32 stereo at 48 kHz) and refuse it by name:
    unreadable, too short, too long, silent. Raises ``DatasetError``."""
    try:
        loaded = load_audio(clip.audio, label=clip.name, max_duration_s=MAX_CLIP_S)
    except AudioInputError as error:
        raise DatasetError(str(error)) from None
    if loaded.duration_s < MIN_CLIP_S:
        raise DatasetError(
            f"{clip.name}: {loaded.duration_s:.1f} s long; a training clip needs at least {MIN_CLIP_S:g} s"
        )
    level = rms_dbfs(loaded.audio)
    if level < SILENCE_DBFS:
        raise DatasetError(f"{clip.name}: silent (level {level:.0f} dBFS, under {SILENCE_DBFS:g}); nothing to learn")
    return loaded


def check_dataset(clips: Sequence[Clip]) -> list[float]:
    """Every clip checked, its decoded audio let go at once (a dataset may not fit in memory); the
    clips' lengths in seconds. Refuses the dataset naming each bad clip and why, all at once."""
    lengths, problems = [], []
    for clip in clips:
        try:
            lengths.append(check_clip(clip).duration_s)
        except DatasetError as error:
            problems.append(str(error))
    if problems:
        raise DatasetError("dataset: " + "; ".join(problems))
    return lengths


def safe_file_name(name: str) -> str:
    """A file name from a stranger as a plain name in the dataset folder (no path, not hidden)."""
    stem = re.sub(r"[^\w.-]+", "_", Path(name).name).lstrip(".")
    return stem[:120] or "song"


def rows_from_table(table: Any) -> list[dict[str, Any]]:
    """The table as manifest rows, bounded: at most ``MAX_CLIPS`` rows of the known columns."""
    rows = table.values.tolist() if hasattr(table, "values") else list(table or [])
    if len(rows) > MAX_CLIPS:
        raise DatasetError(f"dataset: {len(rows):,} songs; the limit is {MAX_CLIPS:,}")
    out = []
    for row in rows:
        cells = ["" if cell is None else cell for cell in list(row)[: len(MANIFEST_FIELDS)]]
        values = dict(zip(MANIFEST_FIELDS, [*cells, *[""] * (len(MANIFEST_FIELDS) - len(cells))], strict=True))
        if not any(str(v).strip() for v in values.values()):
            continue  # an empty row the table keeps for typing
        values = {k: (v if isinstance(v, str) else str(v) if k != "bpm" else v) for k, v in values.items()}
        if isinstance(values["bpm"], float) and values["bpm"].is_integer():
            values["bpm"] = int(values["bpm"])
        out.append(values)
    return out


def fill_row(row: dict[str, Any], described: dict[str, Any]) -> None:
    """Fill only the row's empty fields from a description."""
    language = described.get("vocal_language")
    filled = {
        "caption": described.get("prompt"),
        "lyrics": described.get("lyrics"),
        "language": language if language in VOCAL_LANGUAGES else None,
        "bpm": described.get("bpm"),
        "keyscale": described.get("keyscale"),
    }
    for name, value in filled.items():
        if value not in (None, "") and not str(row.get(name) or "").strip():
            row[name] = value
