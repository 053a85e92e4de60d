"""Saved requests from before the official sampling semantics, read so that they make what they made.

A record whose request lacks ``infer_method`` was made by diffusers' loop as it is: guidance on
``1 - t`` and no DCW. Loading one mirrors its guidance interval into the official reading (the
same steps guided) and turns DCW off. Its ``audio_cover_strength`` is kept as a number but now
means what it means officially (the first share of the steps on the cover condition); diffusers'
per-step blend is gone, so an old cover below strength 1 renders differently (README: Settings).
"""

from __future__ import annotations

from typing import Any

NEW_FIELD = "infer_method"  # present in every request saved since


def upgrade_request(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` as the studio reads them now; a request saved since is returned as it is."""
    if NEW_FIELD in values:
        return values
    upgraded = {**values, "dcw_enabled": False}
    start, end = values.get("cfg_interval_start"), values.get("cfg_interval_end")
    if isinstance(start, int | float) and isinstance(end, int | float) and (start, end) != (0, 1):
        upgraded.update(cfg_interval_start=1.0 - end, cfg_interval_end=1.0 - start)
    return upgraded
