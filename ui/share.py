"""Share links: a request's settings carried in a URL's query string (never audio).

Only the settings that differ from the mode's defaults go into the link, so links stay
short and a later studio with better defaults still applies them. Opening a link fills
the form; nothing runs until the visitor presses Generate.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlencode

from modes import REQUEST_TYPES, SongRequest

MODE_PARAM = "mode"
MAX_QUERY_CHARS = 16_000  # browsers and proxies start refusing URLs around 32k; lyrics fit well within
LINK_AUDIO_STAND_IN = "shared-link.wav"
# A link never carries (or points at) files: audio and cover art are uploaded by the visitor.
AUDIO_FIELDS = frozenset({"src_audio", "reference_audio", "cover_image"})
# Nor a plan's audio codes (a 10-minute plan is 60,000 characters): settings.json carries those.
LEFT_OUT = AUDIO_FIELDS | {"audio_codes"}


def share_query(request: SongRequest) -> str:
    """``?mode=...&field=value...`` for the settings of ``request`` that are not defaults."""
    defaults = type(request)()
    params: list[tuple[str, str]] = [(MODE_PARAM, request.mode)]
    for name in request.field_names():
        value = getattr(request, name)
        if name in LEFT_OUT or value == getattr(defaults, name):
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, tuple | list):
            text = ",".join(str(item) for item in value)
        elif value is None:
            text = ""
        else:
            text = str(value)
        params.append((name, text))
    query = "?" + urlencode(params)
    if len(query) > MAX_QUERY_CHARS:
        raise ValueError(
            f"share link: these settings need {len(query)} characters, more than a link carries "
            f"({MAX_QUERY_CHARS}); share the settings.json instead"
        )
    return query


def request_from_query(params: dict[str, str] | list[tuple[str, str]]) -> SongRequest | None:
    """The request a link describes, validated except for its audio (left empty, to be
    uploaded); ``None`` when the URL carries no settings.

    Raises ``ValueError`` naming the field for a bad value or an unknown name.
    """
    pairs = list(params.items()) if isinstance(params, dict) else list(params)
    values = dict(pairs)
    mode = values.pop(MODE_PARAM, None)
    if mode is None and not values:
        return None
    mode = mode or "generate"
    if mode not in REQUEST_TYPES:
        raise ValueError(f"share link: mode must be one of {', '.join(REQUEST_TYPES)}, got {mode[:40]!r}")
    cls = REQUEST_TYPES[mode]
    for name in AUDIO_FIELDS & values.keys():
        raise ValueError(f"share link: {name} cannot come from a link (links never carry audio)")
    fields = set(cls.field_names())
    typed: dict[str, Any] = {}
    for name, text in values.items():
        if name not in fields:
            typed[name] = text  # from_values names it as unknown
        elif isinstance(getattr(cls(), name), tuple):
            typed[name] = [item for item in text.split(",") if item]
        else:
            typed[name] = text
    # The source song never comes from a link: the visitor uploads it. Validate everything
    # else with a stand-in path, then leave the audio fields empty for the form.
    stand_ins = {name: LINK_AUDIO_STAND_IN for name in AUDIO_FIELDS if name == "src_audio" and name in fields}
    request = cls.from_values({**typed, **stand_ins})
    return dataclasses.replace(request, **dict.fromkeys(stand_ins, ""))
