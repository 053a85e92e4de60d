"""Per-browser run history: the list kept in ``gr.BrowserState``, as plain data.

Only names and text are stored (never audio or markup), and anything a browser hands
back is tolerated: its storage belongs to the user.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict
from typing import Any

from outputs import Run

HISTORY_LIMIT = 20  # runs remembered per browser
MAX_SESSIONS = 10_000  # sessions whose runs RunOwners remembers (about 2 MB at most)
RUNS_PER_SESSION = 4 * HISTORY_LIMIT  # a session's History plus the API runs it made


def add_to_history(
    history: list | None, run: Run, limit: int = HISTORY_LIMIT, ticket: str = "", prompt: str | None = None
) -> list[dict[str, Any]]:
    """This browser's run list with ``run`` first: only names and text, never audio. ``ticket``
    (``RunOwners.ticket``) lets this browser claim the run again after a reload; ``prompt`` names
    the run when its request's prompt is not the user's (a Vary run replays the planner's caption)."""
    request = run.settings["request"]
    entry = {
        "run_id": run.run_id,
        "mode": run.settings["mode"],
        "prompt": str(request.get("prompt", "") if prompt is None else prompt)[:80],
        "created": run.settings.get("created", ""),
    }
    if ticket:
        entry["ticket"] = ticket
    kept = [item for item in (history or []) if isinstance(item, dict) and item.get("run_id") != run.run_id]
    return [entry, *kept][:limit]


def history_choices(history: list | None) -> list[tuple[str, str]]:
    """Dropdown choices (plain text, so nothing in a prompt is ever rendered as markup)."""
    choices = []
    for item in history or []:
        if not isinstance(item, dict) or not isinstance(item.get("run_id"), str):
            continue  # a browser's storage is the user's: tolerate anything in it
        when = str(item.get("created", ""))[11:16]
        choices.append((f"{when} · {item.get('mode', '')} · {item.get('prompt', '') or 'untitled'}", item["run_id"]))
    return choices


class RunOwners:
    """Which runs each visitor made, for a shared studio (a Space) whose outputs folder holds
    every visitor's runs: a run id alone must not open someone else's run.

    A run is recorded for the Gradio session that made it (server side, so a client cannot
    claim one). Across a page reload the session changes, so each History entry carries a
    ticket (an HMAC of its run id under this process's secret) and the reloaded page proves
    its entries with them; a browser's storage can be edited, but a ticket cannot be forged.
    Bounded: the most recent sessions only, and a History's worth of runs (and more) per session.
    """

    def __init__(self, secret: bytes | None = None, max_sessions: int = MAX_SESSIONS) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self._max_sessions = max_sessions
        self._runs: OrderedDict[str, list[str]] = OrderedDict()
        self._lock = threading.Lock()

    def ticket(self, run_id: str) -> str:
        return hmac.new(self._secret, run_id.encode("utf-8"), hashlib.sha256).hexdigest()

    def record(self, session: str, run_id: str) -> None:
        with self._lock:
            runs = self._runs.pop(session, [])
            self._runs[session] = [*(r for r in runs if r != run_id), run_id][-RUNS_PER_SESSION:]
            while len(self._runs) > self._max_sessions:
                self._runs.popitem(last=False)

    def owns(self, session: str, run_id: str) -> bool:
        with self._lock:
            return run_id in self._runs.get(session, ())

    def adopt(self, session: str, history: list | None) -> list[dict[str, Any]]:
        """The History entries this session may open: its own runs, and those whose ticket proves
        this server made them for this browser (each then recorded as this session's). Entries
        without either (edited, or from before a restart) are left out."""
        kept = []
        for item in (history or [])[:HISTORY_LIMIT]:
            if not isinstance(item, dict) or not isinstance(item.get("run_id"), str):
                continue
            ticket = item.get("ticket")
            if isinstance(ticket, str) and hmac.compare_digest(ticket, self.ticket(item["run_id"])):
                self.record(session, item["run_id"])
            if self.owns(session, item["run_id"]):
                kept.append(item)
        return kept
