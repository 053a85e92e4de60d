"""JSON from an untrusted source, parsed only once its shape is known to be small.

``json.loads`` is linear in C, but what comes after it need not be: Python refuses numbers
past 4,300 digits with a raw message, recursion past ~1,000 levels raises ``RecursionError``,
and arithmetic on a million-entry list (``math.prod`` of a shape) is quadratic. ``loads``
first scans the raw bytes with C-speed regular expressions and byte counts (strings emptied,
then brackets, digits, names and commas counted), so every limit in ``JsonLimits`` is checked
in time linear in the byte count, before a single Python object is built.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from itertools import islice
from typing import Any

from validation import echo

# One JSON string, escapes included. The loop is possessive and an unterminated string runs to
# the end, so a match from any quote always succeeds and the scan never re-reads a byte.
_STRING = re.compile(rb'"(?:[^"\\]++|\\[\s\S])*+(?:"|\\?\Z)')
_PAIR = re.compile(rb"\[\]|\{\}")
_BRACKETS_ONLY = bytes(b for b in range(256) if b not in b"[]{}")
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")


class JsonLimitError(ValueError):
    """The text is over one of its limits; the message says which, in plain words.

    ``kind`` names the limit for a reader that words its own refusal: "bytes", "strings",
    "digits", "names", "values" (a long list too), "depth", "syntax" (not JSON, or not UTF-8),
    "constant" (NaN, Infinity), "number" (a float too large), "name" (a long or repeated name).
    ``detail`` is the offending constant or number, or what the JSON parser said.
    """

    def __init__(self, message: str, kind: str = "", detail: str = "") -> None:
        super().__init__(message)
        self.kind, self.detail = kind, detail


class ListTooLong(JsonLimitError):
    """One list holds more items than allowed; ``owner`` is the name of the object holding it."""

    def __init__(self, message: str, items: int, key: str | None, owner: str | None) -> None:
        super().__init__(message, "values")
        self.items, self.key, self.owner = items, key, owner


@dataclass(frozen=True)
class JsonLimits:
    """How large a JSON text may be, counted before it is parsed."""

    max_bytes: int
    max_depth: int  # nesting of lists and objects; the top-level object is 1
    max_names: int  # object keys, all objects together
    max_values: int  # list items and object members, all together (commas)
    max_list_items: int  # items in any one list of plain values
    max_strings: int  # names and string values, all together
    max_digits: int = 20  # digits in any one number (2**64 has 20)
    max_name_chars: int = 256


def emptied_strings(raw: bytes) -> bytes:
    """``raw`` with every string's contents removed: what is left is structure and numbers."""
    return _STRING.sub(b'""', raw)


def _nth_string(raw: bytes, index: int) -> str | None:
    if index < 0:
        return None
    found = next(islice(_STRING.finditer(raw), index, None), None)
    if found is None:
        return None
    try:
        return json.loads(found.group().decode("utf-8", "replace"))
    except ValueError:
        return found.group().decode("utf-8", "replace")


def _long_list(raw: bytes, skeleton: bytes, limit: int) -> ListTooLong | None:
    """The first list of plain values (numbers, strings) longer than ``limit``, named."""
    found = re.search(rb"\[(?:[^\[\]{},]*+,){%d}" % limit, skeleton)
    if found is None:
        return None
    start = found.start()
    end = skeleton.find(b"]", start)
    items = skeleton.count(b",", start, end if end >= 0 else len(skeleton)) + 1
    # Strings are two quotes each in the skeleton, so counting quotes numbers them in ``raw``.
    key = _nth_string(raw, skeleton.count(b'"', 0, start) // 2 - 1)
    opening = skeleton.rfind(b"{", 0, start)
    owner = _nth_string(raw, skeleton.count(b'"', 0, opening) // 2 - 1) if opening >= 0 else None
    where = f"{echo(key)} in {echo(owner)}" if key and owner else echo(key or "?")
    return ListTooLong(f"the list {where} has {items:,} items; the limit is {limit}", items, key, owner)


def _check_nesting(skeleton: bytes, max_depth: int) -> None:
    """Refuse brackets that do not match or nest too deep; at most max_depth + 1 passes."""
    brackets = skeleton.translate(None, _BRACKETS_ONLY)
    for _ in range(max_depth + 1):  # each pass removes the innermost level
        if not brackets:
            return
        reduced = _PAIR.sub(b"", brackets)
        if reduced == brackets:  # well nested text always has an innermost pair to remove
            raise JsonLimitError("it is not valid JSON: its brackets do not match", "syntax", "brackets do not match")
        brackets = reduced
    raise JsonLimitError(f"it is nested more than {max_depth} levels deep; the limit is {max_depth}", "depth")


def _refuse_count(count: int, what: str, limit: int, kind: str) -> None:
    if count > limit:
        raise JsonLimitError(f"it holds {count:,} {what}; the limit is {limit:,}", kind)


def scan(raw: bytes, limits: JsonLimits) -> None:
    """Refuse ``raw`` if it is over ``limits``; linear in its length and parses nothing.

    Counts come before the passes whose cost grows with them. Raises ``JsonLimitError``
    (``ListTooLong`` for a long list, naming it).
    """
    if len(raw) > limits.max_bytes:
        raise JsonLimitError(f"it is {len(raw):,} bytes long; the limit is {limits.max_bytes:,}", "bytes")
    # At most one quote per backslash is escaped, so this many strings at least: counted
    # before the strings are emptied, whose cost grows with their number.
    _refuse_count((raw.count(b'"') - raw.count(b'\\"')) // 2, "strings", limits.max_strings, "strings")
    skeleton = emptied_strings(raw)
    _refuse_count(skeleton.count(b'"') // 2, "strings", limits.max_strings, "strings")
    zeros = skeleton.translate(_DIGITS_AS_ZERO)  # a plain byte search finds a long run of digits fast
    start = zeros.find(b"0" * (limits.max_digits + 1))
    if start >= 0:
        digits = len(re.match(rb"0+", zeros[start:]).group())
        raise JsonLimitError(
            f"it holds a number {digits:,} digits long; the limit is {limits.max_digits} digits", "digits"
        )
    _refuse_count(skeleton.count(b":"), "names", limits.max_names, "names")  # outside strings, a colon ends each name
    long_list = _long_list(raw, skeleton, limits.max_list_items)
    if long_list is not None:
        raise long_list
    commas = skeleton.count(b",")
    if commas > limits.max_values:
        raise JsonLimitError(
            f"it holds more than {limits.max_values:,} values; the limit is {limits.max_values:,}", "values"
        )
    # Each name or list item holds at most a chain of max_depth lists and objects.
    containers = skeleton.count(b"[") + skeleton.count(b"{")
    _refuse_count(
        containers, "lists and objects", limits.max_depth * (limits.max_names + limits.max_values + 1), "values"
    )
    _check_nesting(skeleton, limits.max_depth)


def _refuse_constant(name: str) -> Any:
    raise JsonLimitError(f"it holds {name}, which is not a number JSON allows", "constant", name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: JSON has no infinity
        raise JsonLimitError(f"it holds the number {echo(text)}, too large for a float", "number", text)
    return value


def loads(raw: bytes | str, limits: JsonLimits) -> Any:
    """Parse JSON (UTF-8 bytes, or text) once ``scan`` has passed it. Raises ``JsonLimitError``
    for anything wrong."""
    if isinstance(raw, str):
        text = raw
        scan(raw.encode("utf-8", "surrogatepass"), limits)
    else:
        scan(raw, limits)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise JsonLimitError("it is not valid UTF-8 text", "syntax", "not UTF-8") from None

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        for name, _ in items:
            if len(name) > limits.max_name_chars:
                raise JsonLimitError(
                    f"the name {echo(name)} is {len(name):,} characters long; the limit is {limits.max_name_chars}",
                    "name",
                )
        result = dict(items)
        if len(result) != len(items):
            duplicate = Counter(name for name, _ in items).most_common(1)[0][0]
            raise JsonLimitError(f"the name {echo(duplicate)} appears twice in one object", "name")
        return result

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as error:
        detail = f"{error.msg} at line {error.lineno}"
        raise JsonLimitError(f"it is not valid JSON ({error})", "syntax", detail) from None
    except RecursionError:  # the scan bounds depth; kept so no raw Python message can escape
        raise JsonLimitError(f"it is nested more than {limits.max_depth} levels deep", "depth") from None
