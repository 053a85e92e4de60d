"""The fit meter: will these lyrics fit in this much song?

ACE-Step's most common failure is skipping lyrics when the song is too short for the
words. This estimates the sung syllables, the rate they need, and a duration that fits.
Plain arithmetic on text, no model; the thresholds are rules of thumb for sung pop
(about 3 syllables a second is comfortable, past 5 is rap-fast).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from validation import MAX_DURATION_S, MIN_DURATION_S

COMFORTABLE_RATE = 3.0  # syllables per second a singer carries easily
MAX_RATE = 5.0  # beyond this the model tends to skip or rush words
SECTION_GAP_S = 4.0  # instrumental breathing room per section (intros, turnarounds)
SYLLABLES_PER_BEAT = 1.5  # with a bpm: how densely words sit on the beat at most
DURATION_STEP_S = 10  # suggestions are rounded up to this

_TAG = re.compile(r"^\s*\[[^\]]*\]\s*$")
# Vowels, plain and accented (not every letter of Latin-1: ñ and ç are consonants).
_VOWEL_GROUPS = re.compile(r"[aeiouyàáâãäåæèéêëìíîïòóôõöøùúûüýÿœ]+", re.IGNORECASE)
# Languages whose final e is usually silent in singing ("time", "love"); in Spanish, Italian
# or Portuguese it is a syllable ("fuiste", "notte").
SILENT_FINAL_E = frozenset({"en"})
# Scripts where a character is about a syllable: CJK ideographs, kana, hangul syllables.
_SYLLABIC_CHARS = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


@dataclass(frozen=True)
class Fit:
    syllables: int
    sections: int
    rate: float  # syllables per second of singing time
    suggested_s: int  # a duration that fits comfortably
    verdict: str  # "empty", "fits", "tight" or "too dense"

    def message(self, duration_s: float) -> str:
        if self.verdict == "empty":
            return "No lyrics to fit."
        text = f"About {self.syllables} syllables in {duration_s:g} s: {self.rate:.1f} per second"
        if self.verdict == "fits":
            return f"{text}. They fit."
        if self.verdict == "tight":
            return f"{text}: tight; {self.suggested_s} s would be comfortable."
        return f"{text}: too dense, the model will likely skip words. Try {self.suggested_s} s."


def count_syllables(word: str, language: str = "en") -> int:
    """Syllables in one word: characters for CJK/kana/hangul, vowel groups otherwise."""
    syllabic = len(_SYLLABIC_CHARS.findall(word))
    if syllabic:
        return syllabic
    groups = len(_VOWEL_GROUPS.findall(word))
    silent_e = language in SILENT_FINAL_E and word.lower().endswith("e") and not word.lower().endswith(("le", "ee"))
    if groups > 1 and silent_e:
        groups -= 1  # a silent final e: "time", "love"
    return max(groups, 1)


def measure(lyrics: str, duration_s: float, bpm: int | None = None, language: str = "en") -> Fit:
    """Estimate how well ``lyrics`` fit ``duration_s`` seconds (at ``bpm`` when given)."""
    sung: list[str] = []
    sections = 0
    for line in lyrics.splitlines():
        if _TAG.match(line):
            sections += 1
        elif line.strip():
            sung.append(line)
    syllables = sum(count_syllables(word, language) for line in sung for word in _WORD.findall(line))
    if syllables == 0:
        return Fit(0, sections, 0.0, MIN_DURATION_S, "empty")
    singing_s = max(duration_s - SECTION_GAP_S * max(sections, 1), 1.0)
    rate = syllables / singing_s
    comfortable, limit = COMFORTABLE_RATE, MAX_RATE
    if bpm:
        # At a known tempo the beat sets the ceiling: fast songs carry more words.
        limit = min(MAX_RATE, SYLLABLES_PER_BEAT * bpm / 60.0)
        comfortable = min(COMFORTABLE_RATE, 0.75 * limit)
    needed = syllables / comfortable + SECTION_GAP_S * max(sections, 1)
    suggested = int(min(max(math.ceil(needed / DURATION_STEP_S) * DURATION_STEP_S, MIN_DURATION_S), MAX_DURATION_S))
    verdict = "fits" if rate <= comfortable else "tight" if rate <= limit else "too dense"
    return Fit(syllables, sections, rate, suggested, verdict)


def fit_line(mode: str, values: dict[str, Any]) -> str:
    """The meter's line for one tab's form values: how the lyrics fit the length they will get."""
    lyrics = values.get("lyrics") or ""
    if mode == "generate" and values.get("instrumental"):
        return ""
    duration: float | None = None
    try:
        if mode == "extend":
            duration = float(values.get("extend_seconds") or 0)  # the lyrics are for the new part
        elif mode == "generate" or (mode == "cover" and values.get("audio_duration")):
            duration = float(values.get("audio_duration") or 0)
        elif values.get("src_audio"):
            from audio_io import probe

            header = probe(values["src_audio"])
            duration = header.frames / header.samplerate
        bpm = int(values["bpm"]) if values.get("bpm") else None
    except (TypeError, ValueError):
        return ""  # the form's own validation will say what is wrong
    if not duration or not lyrics.strip():
        return ""
    return measure(lyrics, duration, bpm, str(values.get("vocal_language") or "en")).message(duration)
