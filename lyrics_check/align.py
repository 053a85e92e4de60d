"""The intended lyrics against the words a recogniser heard: line by line, with timings and scores.

Pure functions, no model: the words are aligned by a word-level edit distance (Levenshtein with a
backtrace), so a missing line costs only its own words and an ad-lib between lines costs nobody's.
Each line's word error rate counts its substitutions and deletions plus insertions heard *inside*
it (between its first and last aligned word); insertions between lines are ad-libs, not errors.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# A song's words at 3 a second for 10 minutes are 1,800; the alignment's table is words x words.
MAX_ALIGN_WORDS = 3_000
SUNG_MAX_WER = 0.34  # at most one word in three wrong: the line was sung
MISSING_MIN_WER = 0.75  # three words in four wrong (or none heard at all): the line is missing
SECTION_TAG = re.compile(r"^\s*\[[^\]]*\]\s*$")  # [verse], [Chorus 2], [Instrumental]
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


@dataclass(frozen=True)
class Word:
    """A word heard, with its start and end in seconds."""

    text: str
    start: float
    end: float


@dataclass(frozen=True)
class LyricLine:
    number: int  # 1-based among the sung lines (section tags and blank lines are not counted)
    text: str
    section: str  # the section tag above it, without brackets ("" before the first)
    words: tuple[str, ...]  # normalised
    block: int = 0  # which section tag it follows, counted from 1 (0: before the first)


@dataclass(frozen=True)
class LineResult:
    line: LyricLine
    status: str  # "sung", "partly" or "missing"
    wer: float  # word error rate of this line (can exceed 1 with insertions inside it)
    start: float | None  # seconds; None when nothing of it was heard
    end: float | None
    words: tuple[Word, ...]  # the line's own words (as written) at the times they were heard


def normalise(text: str) -> list[str]:
    """Lower-case words without punctuation; accents folded and apostrophes kept inside words."""
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    folded = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return _WORD.findall(folded)


def lyric_lines(lyrics: str) -> list[LyricLine]:
    """The lines meant to be sung: section tags and lines with no words skipped."""
    lines: list[LyricLine] = []
    section, block = "", 0
    for raw in lyrics.splitlines():
        if SECTION_TAG.match(raw):
            section, block = raw.strip()[1:-1].strip(), block + 1
            continue
        words = normalise(raw)
        if words:
            lines.append(LyricLine(len(lines) + 1, raw.strip(), section, tuple(words), block))
    return lines


def _heard_tokens(heard: Sequence[Word]) -> list[Word]:
    """One entry per normalised word; a recogniser's "don't-stop" or "two words" is split,
    its time shared evenly."""
    tokens: list[Word] = []
    for word in heard:
        parts = normalise(word.text)
        end = max(word.end, word.start)
        step = (end - word.start) / max(len(parts), 1)
        for i, part in enumerate(parts):
            tokens.append(Word(part, word.start + i * step, word.start + (i + 1) * step))
    return tokens


def _edit_table(ref: list[str], hyp: list[str]) -> np.ndarray:
    """The Levenshtein table, one numpy row at a time: a row's insertions are a running minimum
    (``row[j] = j + min_k<=j(base[k] - k)``), so the cost is rows x a vector operation."""
    vocab: dict[str, int] = {}
    ref_ids = np.array([vocab.setdefault(w, len(vocab)) for w in ref], dtype=np.int32)
    hyp_ids = np.array([vocab.setdefault(w, len(vocab)) for w in hyp], dtype=np.int32)
    m = len(hyp)
    table = np.empty((len(ref) + 1, m + 1), dtype=np.int16)  # costs stay under 9,001: the caps in align()
    table[0] = np.arange(m + 1)
    columns = np.arange(m + 1)
    for i in range(1, len(ref) + 1):
        previous = table[i - 1]
        base = np.empty(m + 1, dtype=np.int16)
        base[0] = i
        base[1:] = np.minimum(previous[1:] + 1, previous[:-1] + (hyp_ids != ref_ids[i - 1]))
        table[i] = columns + np.minimum.accumulate(base - columns)
    return table


def _pairs(ref: list[str], hyp: list[str]) -> list[tuple[int | None, int | None]]:
    """The alignment as (ref index or None, hyp index or None), in order; on ties a match or
    substitution is preferred, then a deletion, so a missing line stays a run of deletions."""
    table = _edit_table(ref, hyp)
    i, j = len(ref), len(hyp)
    pairs: list[tuple[int | None, int | None]] = []
    while i > 0 or j > 0:
        if i > 0 and j > 0 and table[i, j] == table[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i > 0 and table[i, j] == table[i - 1, j] + 1:
            pairs.append((i - 1, None))
            i -= 1
        else:
            pairs.append((None, j - 1))
            j -= 1
    pairs.reverse()
    return pairs


def align(lines: Sequence[LyricLine], heard: Sequence[Word]) -> list[LineResult]:
    """Each lyric line with its status, word error rate and the times its words were heard."""
    ref = [word for line in lines for word in line.words]
    owner = [k for k, line in enumerate(lines) for _ in line.words]
    tokens = _heard_tokens(heard)
    if len(ref) > MAX_ALIGN_WORDS:
        raise ValueError(
            f"lyrics: {len(ref)} words are more than a 10-minute song can sing (at most {MAX_ALIGN_WORDS} are checked)"
        )
    tokens = tokens[: 2 * MAX_ALIGN_WORDS]  # a recogniser looping on noise does not grow the table past this
    errors = [0] * len(lines)
    timed: list[list[tuple[int, Word]]] = [[] for _ in lines]  # (ref index, heard word) per line
    pending_insertions = 0
    last_line: int | None = None
    for ref_index, hyp_index in _pairs(ref, [token.text for token in tokens]):
        if ref_index is None:
            pending_insertions += 1  # charged to a line only if the same line's words follow
            continue
        line = owner[ref_index]
        if line == last_line and timed[line]:
            errors[line] += pending_insertions
        pending_insertions = 0
        last_line = line
        if hyp_index is None:
            errors[line] += 1
            continue
        heard_word = tokens[hyp_index]
        if heard_word.text != ref[ref_index]:
            errors[line] += 1
        timed[line].append((ref_index, heard_word))
    first = [owner.index(k) if line.words else 0 for k, line in enumerate(lines)]
    return [_result(line, errors[k], timed[k], ref, first[k]) for k, line in enumerate(lines)]


def _result(line: LyricLine, errors: int, timed: list[tuple[int, Word]], ref: list[str], first: int) -> LineResult:
    wer = errors / len(line.words)
    correct = sum(1 for ref_index, word in timed if word.text == ref[ref_index])
    if correct == 0 or wer >= MISSING_MIN_WER:
        return LineResult(line, "missing", round(wer, 3), None, None, ())
    status = "sung" if wer <= SUNG_MAX_WER else "partly"
    # The line's own words at their heard times, as written, so the LRC reads as the lyrics do.
    written = _WORD.findall(unicodedata.normalize("NFKC", line.text).replace("\u2019", "'"))
    if len(written) != len(line.words):
        written = list(line.words)
    words = tuple(Word(written[ref_index - first], word.start, word.end) for ref_index, word in timed)
    return LineResult(line, status, round(wer, 3), timed[0][1].start, timed[-1][1].end, words)


def sung_share(results: Sequence[LineResult]) -> float:
    """The run-level figure: the share of lyric lines sung (partly sung lines count as not)."""
    return sum(result.status == "sung" for result in results) / len(results) if results else 0.0
