"""LRC out: line times (``[mm:ss.xx]``) with word times inside (enhanced LRC, ``<mm:ss.xx>``),
parsed back, and embedded in a take's tags where the format has a place for them (ID3's SYLT
beside the plain USLT lyrics in WAV and MP3; the Vorbis ``LYRICS`` comment in FLAC and Opus,
which players read as LRC). Lines the check found missing have no time and are left out.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lyrics_check.align import LineResult

MAX_LRC_CHARS = 1_000_000  # an LRC read back is bounded before it is parsed
_TIME = r"(\d{1,3}):(\d{2})(?:[.:](\d{1,3}))?"
_LINE = re.compile(rf"^\[{_TIME}\](.*)$")
_WORD_TIME = re.compile(rf"<{_TIME}>([^<]*)")
_HEADER = re.compile(r"^\[[a-z]+:.*\]$")


@dataclass(frozen=True)
class LrcLine:
    time: float  # seconds
    text: str
    words: tuple[tuple[float, str], ...]  # (seconds, word) where the file gives word times


def stamp(seconds: float) -> str:
    """``mm:ss.xx`` (centiseconds, as LRC players expect)."""
    centis = max(0, round(seconds * 100))
    return f"{centis // 6000:02d}:{centis // 100 % 60:02d}.{centis % 100:02d}"


def to_lrc(results: Sequence[LineResult], title: str = "", words: bool = True) -> str:
    """The LRC text of the lines that were heard, in time order; ``words`` adds word times."""
    header = [f"[ti:{_one_line(title)}]"] if title.strip() else []
    header.append("[re:ACE Music Studio lyrics check]")
    body = []
    for result in sorted((r for r in results if r.start is not None), key=lambda r: r.start or 0.0):
        if words and result.words:
            text = " ".join(f"<{stamp(word.start)}>{word.text}" for word in result.words)
        else:
            text = _one_line(result.line.text)
        body.append(f"[{stamp(result.start or 0.0)}]{text}")
    return "\n".join(header + body) + "\n"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _seconds(minutes: str, seconds: str, fraction: str | None) -> float:
    return int(minutes) * 60 + int(seconds) + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def parse_lrc(text: str) -> list[LrcLine]:
    """The timed lines of an LRC text (headers skipped); ``ValueError`` for a line that is neither."""
    if len(text) > MAX_LRC_CHARS:
        raise ValueError(f"lrc: {len(text)} characters is more than the {MAX_LRC_CHARS} an LRC file may have")
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        raw = raw.strip()
        if not raw or _HEADER.match(raw):
            continue
        match = _LINE.match(raw)
        if match is None:
            raise ValueError(f"lrc: line {number} has no [mm:ss.xx] time: {raw[:60]!r}")
        body = match.group(4)
        timed = tuple((_seconds(*m.group(1, 2, 3)), m.group(4).strip()) for m in _WORD_TIME.finditer(body))
        plain = " ".join(word for _, word in timed) if timed else body.strip()
        lines.append(LrcLine(_seconds(*match.group(1, 2, 3)), plain, timed))
    return lines


def sylt_entries(results: Sequence[LineResult]) -> list[tuple[str, int]]:
    """ID3 SYLT's (text, milliseconds) pairs: one per word where word times are known, else per line."""
    entries: list[tuple[str, int]] = []
    for result in sorted((r for r in results if r.start is not None), key=lambda r: r.start or 0.0):
        if result.words:
            entries.extend((f"{word.text} ", round(word.start * 1000)) for word in result.words)
            entries[-1] = (entries[-1][0].rstrip() + "\n", entries[-1][1])
        else:
            entries.append((result.line.text + "\n", round((result.start or 0.0) * 1000)))
    return entries


def embed(path: Path, results: Sequence[LineResult], lrc_text: str) -> bool:
    """Put the timings into ``path``'s tags; False for a format with no place for them. The file
    is tagged as a copy beside it and renamed over it, so a failure leaves the take as it was."""
    suffix = path.suffix.lower()
    if suffix not in {".wav", ".mp3", ".flac", ".opus", ".ogg"}:
        return False
    copy = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tagging")
    try:
        shutil.copyfile(path, copy)
        if suffix in {".wav", ".mp3"}:
            _embed_id3(copy, suffix, results)
        else:
            _embed_vorbis(copy, suffix, lrc_text)
        os.replace(copy, path)
    except BaseException:
        copy.unlink(missing_ok=True)
        raise
    return True


def _embed_id3(path: Path, suffix: str, results: Sequence[LineResult]) -> None:
    from mutagen.id3 import ID3, SYLT
    from mutagen.wave import WAVE

    sylt = SYLT(encoding=3, lang="XXX", format=2, type=1, desc="", text=sylt_entries(results))  # ms, lyrics
    if suffix == ".wav":
        wave = WAVE(path)
        if wave.tags is None:
            wave.add_tags()
        tags: Any = wave.tags  # set just above; mutagen's hints say it may be None
        tags.setall("SYLT", [sylt])
        wave.save()
    else:
        id3 = ID3(path)
        id3.setall("SYLT", [sylt])
        id3.save(path)


def _embed_vorbis(path: Path, suffix: str, lrc_text: str) -> None:
    from mutagen.flac import FLAC
    from mutagen.oggopus import OggOpus

    file = FLAC(path) if suffix == ".flac" else OggOpus(path)
    file["LYRICS"] = lrc_text
    file.save()
