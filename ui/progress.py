"""A run as the page shows it, kept per browser so that a reload finds it again.

The engine reports ``(fraction, message)``; the page shows one labelled stage instead (planning,
encoding, denoising with "step n of N", decoding, mastering, writing), with the time so far and,
while denoising, an estimate of what is left. No percentage: one number per stage.

``RunBoard`` holds each browser's latest song run by a random id the browser keeps in its own
storage (``gr.BrowserState``): the handler writes into it, and the page's timer reads it, so a
page reloaded mid-run (or a phone that slept) shows the progress again, then the finished take.
"""

from __future__ import annotations

import html
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

MAX_BROWSERS = 10_000  # browsers whose latest run is remembered (a few hundred bytes each)
BROWSER_ID_CHARS = 64  # a browser id longer than this is not one the page made
# (pattern on the engine's message, the stage's label): the first that matches names the stage.
STAGES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^Loading"), "Loading the model"),
    (re.compile(r"^Planning"), "Planning"),
    (re.compile(r"^Encoding"), "Encoding"),
    (re.compile(r"^(Denoising|FlowEdit) step"), "Denoising"),
    (re.compile(r"^Decoding"), "Decoding"),
    (re.compile(r"^Mastering"), "Mastering"),
    (re.compile(r"^Writing"), "Writing files"),
    (re.compile(r"^Done"), "Done"),
)
STAGE_ORDER = ("Planning", "Encoding", "Denoising", "Decoding", "Mastering", "Writing files")
STEP = re.compile(r"(\d+)/(\d+)")


def stage_of(message: str) -> tuple[str, int | None, int | None]:
    """The stage an engine message belongs to, and its ``n`` of ``N`` when it counts steps or codes."""
    label = next((label for pattern, label in STAGES if pattern.search(message)), "Working")
    counted = STEP.search(message)
    if counted is None:
        return label, None, None
    return label, int(counted.group(1)), int(counted.group(2))


def seconds_text(seconds: float) -> str:
    """A duration as people say it: "8 s", "2 min 05 s"."""
    whole = max(0, round(seconds))
    return f"{whole} s" if whole < 60 else f"{whole // 60} min {whole % 60:02d} s"


@dataclass
class RunView:
    """One browser's latest song run: its stage, how far, and how it ended."""

    session: str  # the Gradio session that runs it (Cancel reaches it through ActiveRuns)
    started: float = field(default_factory=time.monotonic)
    stage: str = "Waiting for its turn"
    count: int | None = None
    total: int | None = None
    stage_started: float = field(default_factory=time.monotonic)
    first_step_at: float | None = None  # when denoising's first step was reported
    run_id: str = ""  # set when the run is saved
    ended: str = ""  # "", "done", "cancelled" or "failed"
    error: str = ""  # the failure in the user's words (already safe text)
    run: Any = None  # the saved run (``outputs.Run``), for a page that reattaches after a reload

    def report(self, message: str) -> None:
        stage, count, total = stage_of(message)
        now = time.monotonic()
        if stage != self.stage:
            self.stage, self.stage_started = stage, now
        if stage == "Denoising" and count == 1:
            self.first_step_at = now
        self.count, self.total = count, total

    def eta(self) -> float | None:
        """Seconds of denoising left, from the pace of the steps so far (None before two steps)."""
        if self.stage != "Denoising" or not self.count or not self.total or self.first_step_at is None:
            return None
        if self.count < 2:
            return None
        pace = (time.monotonic() - self.first_step_at) / (self.count - 1)
        return pace * (self.total - self.count)

    def line(self) -> str:
        """The run in one line of HTML (every part escaped): the stage, its count, the time."""
        elapsed = seconds_text(time.monotonic() - self.started)
        if self.ended == "done":
            return f"<strong>Done</strong> · saved {html.escape(self.run_id)} · took {elapsed}"
        if self.ended == "cancelled":
            return "<strong>Cancelled</strong> · nothing was saved; earlier takes are untouched"
        if self.ended == "failed":
            return f"<strong>Failed</strong> · {self.error}"
        parts = [f"<strong>{html.escape(self.stage)}</strong>"]
        if self.count is not None and self.total:
            noun = "code" if self.stage == "Planning" else "step"
            parts.append(f"{noun} {self.count} of {self.total}")
        eta = self.eta()
        if eta is not None:
            parts.append(f"about {seconds_text(eta)} left")
        parts.append(f"{elapsed} so far")
        strip = " › ".join(f"<u>{name}</u>" if name == self.stage else html.escape(name) for name in STAGE_ORDER)
        return " · ".join(parts) + f'<br><span class="run-stages">{strip}</span>'


class RunBoard:
    """Each browser's latest song run, by the random id its page keeps (bounded, oldest dropped)."""

    def __init__(self, max_browsers: int = MAX_BROWSERS) -> None:
        self._views: OrderedDict[str, RunView] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_browsers

    @staticmethod
    def valid(browser: Any) -> bool:
        return isinstance(browser, str) and 16 <= len(browser) <= BROWSER_ID_CHARS and browser.isascii()

    def begin(self, browser: Any, session: str) -> RunView | None:
        """A new run for ``browser`` (None when the page sent no usable id: nothing is kept)."""
        if not self.valid(browser):
            return None
        view = RunView(session)
        with self._lock:
            self._views.pop(browser, None)
            self._views[browser] = view
            while len(self._views) > self._max:
                self._views.popitem(last=False)
        return view

    def get(self, browser: Any) -> RunView | None:
        if not self.valid(browser):
            return None
        with self._lock:
            return self._views.get(browser)


class BoardRelay:
    """The engine's ``(fraction, message)`` to ``gr.Progress`` and to the browser's ``RunView``.

    Pickled into a ZeroGPU worker without the view (the worker cannot reach this process's board)."""

    def __init__(self, progress: Any, view: RunView | None) -> None:
        self.progress = progress
        self.view = view

    def __call__(self, fraction: float, message: str) -> None:
        if self.view is not None:
            self.view.report(message)
        if self.progress is not None:
            self.progress(fraction, desc=message)

    def __getstate__(self) -> dict[str, Any]:
        return {"progress": self.progress, "view": None}
