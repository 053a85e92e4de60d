"""Repair by line: the flagged lines' time windows re-made with Edit's repaint, then checked again;
and "edit by line": a section ("Chorus 2") mapped to the time span its lines were heard in.

A flagged line (missing or partly sung) is re-made over the gap between the lines either side
that were heard, so the new singing has room and nothing already sung well is touched. Each
window is one Edit (repaint: everything outside it stays bit-identical, bar the seam's crossfade),
run on the previous window's result; every step is a saved run, so nothing made is lost.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from backend import RunControl
from lyrics_check.align import LineResult
from lyrics_check.check import LyricsCheck, LyricsChecker, saved_check, sung_lyrics
from modes import EditRequest
from outputs import SETTINGS_FILE, load_settings
from validation import MAX_SEED, MIN_SEGMENT_S, echo

NOTHING_TO_REPAIR = "Every line was sung: there is nothing to repair."
NOTHING_PICKED = "lines: choose the lines or sections to re-make first."


@dataclass(frozen=True)
class Window:
    start: float  # seconds
    end: float
    lines: tuple[int, ...]  # the lyric line numbers it re-makes


def flagged_windows(
    results: Sequence[LineResult], duration_s: float, chosen: Collection[int] | None = None
) -> list[Window]:
    """The time windows of the lines to re-make (``chosen`` line numbers, else those not fully
    sung), each over the gap between the kept lines heard either side, merged where they touch,
    at least ``MIN_SEGMENT_S`` long and inside the take."""
    remade = [r.status != "sung" if chosen is None else r.line.number in chosen for r in results]
    kept = [not remake and r.start is not None and r.end is not None for r, remake in zip(results, remade, strict=True)]
    windows: list[Window] = []
    for k, result in enumerate(results):
        if not remade[k]:
            continue
        before = [r.end for r, keep in zip(results[:k], kept[:k], strict=True) if keep and r.end is not None]
        after = [
            r.start for r, keep in zip(results[k + 1 :], kept[k + 1 :], strict=True) if keep and r.start is not None
        ]
        start, end = (before[-1] if before else 0.0), (after[0] if after else duration_s)
        if windows and start <= windows[-1].end:
            last = windows.pop()
            start, end = last.start, max(end, last.end)
            numbers = (*last.lines, result.line.number)
        else:
            numbers = (result.line.number,)
        windows.append(Window(start, end, numbers))
    return [_widened(window, duration_s) for window in windows]


def _widened(window: Window, duration_s: float) -> Window:
    missing = MIN_SEGMENT_S - (window.end - window.start)
    if missing <= 0:
        return window
    start = max(0.0, window.start - missing / 2)
    end = min(duration_s, start + MIN_SEGMENT_S)
    return dataclasses.replace(window, start=max(0.0, end - MIN_SEGMENT_S), end=end)


def section_labels(results: Sequence[LineResult]) -> dict[str, list[LineResult]]:
    """Each section of the lyrics by the name a musician uses: its tag, numbered when it repeats
    ("Chorus 1", "Chorus 2"), with its lines."""
    blocks: dict[int, list[LineResult]] = {}
    for result in results:
        blocks.setdefault(result.line.block, []).append(result)
    names = [lines[0].line.section or "Start" for lines in blocks.values()]
    labels: dict[str, list[LineResult]] = {}
    seen: dict[str, int] = {}
    for name, lines in zip(names, blocks.values(), strict=True):
        key = name.lower()
        seen[key] = seen.get(key, 0) + 1
        repeats = sum(n.lower() == key for n in names) > 1 and not name[-1:].isdigit()
        labels[f"{name.title()} {seen[key]}" if repeats else name.title()] = lines
    return labels


def section_span(results: Sequence[LineResult], label: str) -> tuple[float, float]:
    """The seconds a section ("Chorus 2") was heard in; ``ValueError`` naming the sections there are."""
    labels = section_labels(results)
    found = {name.lower(): lines for name, lines in labels.items()}.get(" ".join(label.split()).lower())
    if found is None:
        raise ValueError(f"section: no section called {echo(label)}; this take has {', '.join(labels)}")
    heard = [r for r in found if r.start is not None and r.end is not None]
    if not heard:
        raise ValueError(f"section: none of {echo(label)} was heard, so it has no place in the take to edit")
    return min(r.start for r in heard if r.start is not None), max(r.end for r in heard if r.end is not None)


def repair_request(settings: dict[str, Any], source: str, window: Window, results: Sequence[LineResult]) -> EditRequest:
    """The Edit that re-makes ``window`` of the take at ``source`` with its lines' lyrics, in the
    run's own style and sampler settings, on the next seed (the take's own seed made the fault)."""
    fields = {field.name for field in dataclasses.fields(EditRequest)}
    saved = {name: value for name, value in settings["request"].items() if name in fields}
    by_number = {r.line.number: r.line for r in results}
    lyrics, section = [], None
    for number in window.lines:
        line = by_number[number]
        if line.section and line.section != section:
            lyrics.append(f"[{line.section}]")
        section = line.section
        lyrics.append(line.text)
    values = {
        **saved, "src_audio": source, "task_type": "repaint", "repainting_start": round(window.start, 3),
        "repainting_end": round(window.end, 3), "lyrics": "\n".join(lyrics), "batch_size": 1,
        "seed": (int(settings["takes"][0]["seed"]) + 1) % (MAX_SEED + 1),
    }  # fmt: skip
    return EditRequest.from_values(values).validate()


MAX_PICKS = 200  # lines or sections named in one "edit by line"; a song has fewer


def picked_lines(results: Sequence[LineResult], picks: Sequence[str]) -> list[int]:
    """ "Edit by line": the line numbers a user picked, each pick a line number ("3"), a line as
    the picker lists it ("Line 3: we sing…") or a section ("Chorus 2"); ``ValueError`` naming
    what there is for a pick that is none of them."""
    if len(picks) > MAX_PICKS:
        raise ValueError(f"lines: at most {MAX_PICKS} lines or sections at once, got {len(picks)}")
    labels = {name.lower(): lines for name, lines in section_labels(results).items()}
    numbers = {r.line.number for r in results}
    chosen: set[int] = set()
    for pick in picks:
        text = " ".join(str(pick).split())
        number = re.fullmatch(r"(?:line\s*)?(\d{1,4})(?::.*)?", text, flags=re.IGNORECASE | re.DOTALL)
        if number is not None and int(number.group(1)) in numbers:
            chosen.add(int(number.group(1)))
        elif text.lower() in labels:
            chosen.update(r.line.number for r in labels[text.lower()])
        else:
            raise ValueError(
                f"lines: no line or section called {echo(text)}; this take has lines 1 to {len(results)} "
                f"and {', '.join(section_labels(results))}"
            )
    return sorted(chosen)


def pick_choices(results: Sequence[LineResult]) -> list[str]:
    """What the "edit by line" picker offers: each section, then each line."""
    lines = [f"Line {r.line.number}: {' '.join(r.line.text.split())[:60]}" for r in results]
    return [*section_labels(results), *lines]


def lyrics_of(results: Sequence[LineResult]) -> str:
    """The lyrics a check was made against, rebuilt from its lines (a repaired run's own lyrics
    are only the lines it re-made), with its section tags, so ``lyric_lines`` gives them back."""
    out: list[str] = []
    block = None
    for r in results:
        if r.line.block != block and r.line.section:
            out.append(f"[{r.line.section}]")
        block = r.line.block
        out.append(r.line.text)
    return "\n".join(out)


def repair(
    studio: Any, checker: LyricsChecker, check: LyricsCheck, control: RunControl, lines: Collection[int] | None = None
) -> LyricsCheck:
    """Re-make the flagged lines (or ``lines``, by number) of a checked take, window by window, and
    check the result again against the whole song's lyrics. Returns the new check (its run is the last Edit's)."""
    folder = studio.store.run_folder(check.run_id)
    settings = load_settings(folder / SETTINGS_FILE)
    lyrics = lyrics_of(check.lines)
    take = settings["takes"][check.take - 1]
    duration = _length(folder / take["files"]["wav"])
    if lines is not None and not lines:
        raise ValueError(NOTHING_PICKED)
    windows = flagged_windows(check.lines, duration, lines)
    if not windows:
        raise ValueError(NOTHING_TO_REPAIR)
    source_run, source = check.run_id, str(folder / take["files"]["wav"])
    step = 0.8 / len(windows)
    for k, window in enumerate(windows):
        control.report(k * step, f"Re-making lines {', '.join(map(str, window.lines))}…")
        request = repair_request({**settings, "takes": [take]}, source, window, check.lines)
        run = studio.generate(request, control.part(k * step, (k + 1) * step))
        source_run, source = run.run_id, str(run.takes[0].files["wav"])
    return checker.check(source_run, 1, control.part(0.8, 1.0), lyrics=lyrics)


def check_take(studio: Any, run_id: str, take: int, control: RunControl) -> LyricsCheck:
    """The page's and the API's check: against the lyrics of the take's earlier check when it has
    one (a repaired take's own request holds only the lines it re-made), else the run's lyrics."""
    earlier = saved_check(studio.store, run_id, take)
    lyrics = None if earlier is None else lyrics_of(earlier.lines)
    return studio.lyrics_checker().check(run_id, take, control, lyrics=lyrics)


def repair_take(
    studio: Any, run_id: str, take: int, control: RunControl, picks: Sequence[str] | None = None
) -> tuple[LyricsCheck, LyricsCheck]:
    """The page's and the API's repair: a saved run's take checked (the saved check, else a new
    one), then its flagged lines (or the ``picks``: lines and sections) re-made and checked again.
    Returns (the check repaired from, the new check). Refusals come before any model time."""
    checker = studio.lyrics_checker()
    sung_lyrics(load_settings(studio.store.run_folder(run_id) / SETTINGS_FILE))  # instrumental: refused now
    check = saved_check(studio.store, run_id, take)
    if check is None:
        check = checker.check(run_id, take, control.part(0.0, 0.2))
        control = control.part(0.2, 1.0)
    lines = None if picks is None else picked_lines(check.lines, picks)
    return check, repair(studio, checker, check, control, lines)


def _length(path: Any) -> float:
    import soundfile as sf

    info = sf.info(path)
    return float(info.frames / info.samplerate)
