"""Failures in the page's own words: the label a control has on screen, not its field name.

The engine and the API say ``repainting_end: must be ...`` (the field names are the API's
parameters). On the page the same message reads ``Segment end: must be ...``. ``in_words``
wraps a page handler so that every ``gr.Error`` it raises is relabelled; the text stays escaped
(``safe_message``), so markup in a message is shown as text.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import gradio as gr

from ui.controls import CONTROLS
from validation import safe_message

F = TypeVar("F", bound=Callable[..., Any])

# Names that are not form controls but appear in messages the page shows.
EXTRA_LABELS = {
    "parent_run_id": "The run to vary",
    "run_id": "The run",
    "take": "Take",
    "stem_model": "Stem model",
    "settings": "Settings",
    "share link": "Share link",
    "inputs": "Kept files",
    "plan": "Plan",
    "preset": "Preset",
    "variance": "Variance",
    "brief": "What is the song about?",
}


def _short(label: str) -> str:
    """A label without its hint in brackets: "Seed (-1 = random)" -> "Seed"."""
    return re.sub(r"\s*\([^)]*\)\s*$", "", label).strip() or label


LABELS: dict[str, str] = {control.name: _short(control.label) for control in CONTROLS} | EXTRA_LABELS
# A message names its field first ("bpm: ..."), and may name more fields inside ("... than repainting_start").
_LEAD = re.compile(r"^([a-z_]+(?: link)?):")
_INSIDE = re.compile(r"\b(" + "|".join(sorted((n for n in LABELS if "_" in n), key=len, reverse=True)) + r")\b")


def user_terms(message: str) -> str:
    """``message`` with field names replaced by the labels the page shows."""
    text = _LEAD.sub(lambda m: f"{LABELS.get(m.group(1), m.group(1))}:", message, count=1)
    return _INSIDE.sub(lambda m: f"“{LABELS[m.group(1)]}”", text)


def reworded(error: gr.Error) -> gr.Error:
    """The same error in the page's words (title, duration and the rest kept)."""
    error.message = safe_message(user_terms(str(error.message)))
    return error


def in_words(handler: F) -> F:
    """A page handler whose ``gr.Error`` messages name controls by their on-screen labels."""
    if hasattr(handler, "__wrapped_in_words__"):
        return handler

    if _is_generator(handler):

        @functools.wraps(handler)
        def streaming(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from handler(*args, **kwargs)
            except gr.Error as error:
                raise reworded(error) from error.__cause__

        wrapped: Any = streaming
    else:

        @functools.wraps(handler)
        def plain(*args: Any, **kwargs: Any) -> Any:
            try:
                return handler(*args, **kwargs)
            except gr.Error as error:
                raise reworded(error) from error.__cause__

        wrapped = plain
    wrapped.__wrapped_in_words__ = True
    return wrapped


def _is_generator(handler: Callable[..., Any]) -> bool:
    import inspect

    return inspect.isgeneratorfunction(handler) or inspect.isgeneratorfunction(getattr(handler, "__func__", None))


_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def literal(text: str) -> str:
    """A name for Markdown as text: markup escaped and Markdown's punctuation backslashed, so a
    LoRA named ``[win](https://x.example)`` on a shared Space's store shows those characters and is
    no link in another visitor's page."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", html.escape(text, quote=False))
