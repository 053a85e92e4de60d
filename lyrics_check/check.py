"""The lyrics check of a saved take: vocals split out (Demucs), heard with word times, aligned
to the lyrics, saved as an LRC in the run, embedded in the take's tags and recorded in
settings.json (``lyrics_check``, one entry per take). Nothing here knows about Gradio.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from audio_io import SAMPLE_RATE
from backend import RunControl
from export import title_from_prompt
from lyrics_check.align import LineResult, LyricLine, align, lyric_lines, normalise, sung_share
from lyrics_check.lrc import embed, to_lrc
from lyrics_check.recognise import SPEECH_RATE, Recogniser
from modes import INSTRUMENTAL_LYRICS
from outputs import SETTINGS_FILE, OutputStore, load_settings
from stems import DEFAULT_STEM_MODEL, StemSplitter

SETTINGS_SECTION = "lyrics_check"
TEST_STEM_MODEL = "demucs_unittest"  # Demucs' tiny bundled model: runs offline, beside the tiny test models
INSTRUMENTAL_MESSAGE = "This take is instrumental: it has no lyrics to check."


@dataclass(frozen=True)
class LyricsCheck:
    run_id: str
    take: int  # 1-based
    lines: list[LineResult]
    sung_share: float  # the run-level figure: share of the lyric lines sung
    lrc_path: Path
    tagged: list[str]  # the take's files that now carry the timings

    def record(self) -> dict[str, Any]:
        """What settings.json keeps of it."""
        return {
            "sung_share": round(self.sung_share, 3),
            "lrc": self.lrc_path.relative_to(self.lrc_path.parent.parent).as_posix(),
            "lines": [
                {
                    "line": r.line.number,
                    "text": r.line.text,
                    "section": r.line.section,
                    "block": r.line.block,
                    "status": r.status,
                    "wer": r.wer,
                    "start": _seconds(r.start),
                    "end": _seconds(r.end),
                }
                for r in self.lines
            ],
        }


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def saved_check(store: OutputStore, run_id: str, take: int) -> LyricsCheck | None:
    """The check saved in a run's settings.json for ``take`` (without word times), or None when
    the take was not checked (or its record is not one this studio wrote)."""
    folder = store.run_folder(run_id)
    record = load_settings(folder / SETTINGS_FILE).get(SETTINGS_SECTION)
    entry = record.get(f"take{take}") if isinstance(record, dict) else None
    if not isinstance(entry, dict):
        return None
    try:
        results = [_line_result(line) for line in entry["lines"]]
        lrc_path = folder / str(entry["lrc"])
        if folder.resolve() not in lrc_path.resolve().parents or not results:
            return None  # the LRC is the run's own file, never one elsewhere
        return LyricsCheck(run_id, take, results, float(entry["sung_share"]), lrc_path, [])
    except (KeyError, TypeError, ValueError):
        return None


def _line_result(saved: dict[str, Any]) -> LineResult:
    text = str(saved["text"])
    line = LyricLine(
        int(saved["line"]), text, str(saved["section"]), tuple(normalise(text)), int(saved.get("block", 0))
    )
    if saved["status"] not in STATUS_WORDS:
        raise ValueError(f"status: {saved['status']!r}")
    start, end = (None if saved[key] is None else float(saved[key]) for key in ("start", "end"))
    return LineResult(line, str(saved["status"]), float(saved["wer"]), start, end, ())


def sung_lyrics(settings: dict[str, Any]) -> str:
    """The lyrics a run meant to sing; ``ValueError`` (in the user's words) for an instrumental take."""
    request = settings.get("request", {})
    lyrics = str(request.get("lyrics", ""))
    if request.get("instrumental") or lyrics.strip() == INSTRUMENTAL_LYRICS or not lyric_lines(lyrics):
        raise ValueError(INSTRUMENTAL_MESSAGE)
    return lyrics


def to_speech(audio: np.ndarray, rate: int) -> np.ndarray:
    """``[channels, samples]`` at ``rate`` to mono float32 at ``SPEECH_RATE``."""
    from scipy.signal import resample_poly

    mono = np.asarray(audio, dtype=np.float32).mean(axis=0)
    common = gcd(rate, SPEECH_RATE)
    return resample_poly(mono, SPEECH_RATE // common, rate // common).astype(np.float32)


class Separator(Protocol):
    def separate(
        self, audio: np.ndarray, model: str, progress: Callable[[float], None] | None = None
    ) -> dict[str, np.ndarray]: ...


class LyricsChecker:
    """Checks saved takes; the recogniser and the stem splitter are injected (tests use small ones)."""

    def __init__(
        self,
        store: OutputStore,
        recogniser: Recogniser,
        splitter: Separator | None = None,
        stem_model: str = DEFAULT_STEM_MODEL,
    ) -> None:
        self.store = store
        self.recogniser = recogniser
        self.splitter: Separator = splitter or StemSplitter()
        self.stem_model = stem_model

    def check(self, run_id: str, take: int, control: RunControl, lyrics: str | None = None) -> LyricsCheck:
        """Check ``take`` (1-based) of a saved run against its lyrics (or ``lyrics``: a repair's run
        was made with only the flagged lines' words, and is checked against the whole song's)."""
        import soundfile as sf

        folder = self.store.run_folder(run_id)
        settings = json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8"))
        takes = settings.get("takes", [])
        if not isinstance(take, int) or not 1 <= take <= len(takes):
            raise ValueError(f"take: run {run_id} has {len(takes)} take(s), got {take!r}")
        lyrics = sung_lyrics(settings if lyrics is None else {"request": {"lyrics": lyrics}})  # before model time
        lines = lyric_lines(lyrics)
        audio, rate = sf.read(folder / takes[take - 1]["files"]["wav"], dtype="float32", always_2d=True)
        if rate != SAMPLE_RATE:
            raise ValueError(f"take: take {take} is at {rate} Hz, not the studio's {SAMPLE_RATE} Hz")
        control.check()
        control.report(0.02, "Separating the vocals…")
        stems = self.splitter.separate(audio.T, self.stem_model, progress=self._part(control, 0.02, 0.5))
        control.check()
        vocals = to_speech(stems["vocals"], SAMPLE_RATE)  # the splitter hands stems back at the studio's rate
        control.report(0.5, "Listening to the vocals…")  # the stage begins whatever the recogniser reports
        heard = self.recogniser.words(vocals, lyrics, control.part(0.5, 0.9))
        control.check()
        control.report(0.9, "Comparing with the lyrics…")
        results = align(lines, heard)
        lrc_text = to_lrc(results, title=title_from_prompt(str(settings.get("request", {}).get("prompt", ""))))

        def write_lrc(path: Path) -> None:
            path.write_text(lrc_text, encoding="utf-8")

        [lrc_path] = self.store.add_to_run(run_id, f"lyrics-take{take}", {f"take{take}.lrc": write_lrc})
        control.report(0.95, "Writing the timings into the take…")
        tagged = [file for file in takes[take - 1]["files"].values() if embed(folder / file, results, lrc_text)]
        result = LyricsCheck(run_id, take, results, sung_share(results), lrc_path, tagged)
        record = settings.get(SETTINGS_SECTION) if isinstance(settings.get(SETTINGS_SECTION), dict) else {}
        self.store.update_settings(run_id, SETTINGS_SECTION, {**record, f"take{take}": result.record()})
        control.report(1.0, "Done")
        return result

    @staticmethod
    def _part(control: RunControl, start: float, end: float):
        def report(fraction: float) -> None:
            control.check()  # raising inside Demucs' callback stops the separation
            control.report(start + (end - start) * fraction, "Separating the vocals…")

        return report


STATUS_WORDS = {"sung": "sung", "partly": "partly sung", "missing": "**missing**"}


def report_markdown(check: LyricsCheck) -> str:
    """A small table for under the take: each line, its status, its word error rate and time."""
    rows = [
        f"Lines sung: **{check.sung_share:.0%}** of {len(check.lines)}",
        "",
        "| # | line | status | WER | at |",
        "| ---: | --- | --- | ---: | ---: |",
    ]
    for r in check.lines:
        text = re.sub(r"([\\`*_\[\]|#!~])", r"\\\1", html.escape(r.line.text[:80]))
        at = "" if r.start is None else f"{int(r.start // 60)}:{r.start % 60:04.1f}"
        rows.append(f"| {r.line.number} | {text} | {STATUS_WORDS[r.status]} | {r.wer:.0%} | {at} |")
    return "\n".join(rows)
