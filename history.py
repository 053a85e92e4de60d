"""Per-browser run history: the list kept in ``gr.BrowserState``, as plain data.

Only names and text are stored (never audio or markup), and anything a browser hands
back is tolerated: its storage belongs to the user.
"""

from __future__ import annotations

from typing import Any

from outputs import Run

HISTORY_LIMIT = 20  # runs remembered per browser


def add_to_history(history: list | None, run: Run, limit: int = HISTORY_LIMIT) -> list[dict[str, Any]]:
    """This browser's run list with ``run`` first: only names and text, never audio."""
    request = run.settings["request"]
    entry = {
        "run_id": run.run_id,
        "mode": run.settings["mode"],
        "prompt": request.get("prompt", "")[:80],
        "created": run.settings.get("created", ""),
    }
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
