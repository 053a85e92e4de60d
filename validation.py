"""What a value may be, and the words that say when it is not: every limit, range and name list
(languages, keys, time signatures, tracks) written once, and the checks and coercion every request
type uses (``modes``' song requests, ``VaryRequest``, ``LyricsRequest``, ``PlannerSettings``).

The form's controls read their ranges and choices from here too, so a slider never offers what a
request refuses. Every message names the field and shows the bad value through ``echo``; the UI
shows every message through ``safe_message``. Standard library only.
"""

from __future__ import annotations

import dataclasses
import html
import math
import re
import reprlib
import types
import typing
from collections.abc import Mapping
from typing import Any

MIN_DURATION_S = 10
MAX_DURATION_S = 600
MIN_STEPS = 1
MAX_STEPS = 200
MAX_GUIDANCE = 20.0
MIN_SHIFT = 1.0  # the official guide's shift range is 1-5
MAX_SHIFT = 5.0
MIN_BPM = 30
MAX_BPM = 300
MAX_BATCH = 8
MAX_SEED = 2**32 - 1
MAX_PROMPT_CHARS = 2_000
MAX_LYRICS_CHARS = 8_000  # about 2,000 text-encoder tokens, the pipeline's lyric limit
RANDOM_SEED = -1

# The vocal languages ACE-Step 1.5 was trained on (official constants, VALID_LANGUAGES).
VOCAL_LANGUAGES: tuple[str, ...] = (
    "ar", "az", "bg", "bn", "ca", "cs", "da", "de", "el", "en", "es", "fa", "fi", "fr",
    "he", "hi", "hr", "ht", "hu", "id", "is", "it", "ja", "ko", "la", "lt", "ms", "ne",
    "nl", "no", "pa", "pl", "pt", "ro", "ru", "sa", "sk", "sr", "sv", "sw", "ta", "te",
    "th", "tl", "tr", "uk", "ur", "vi", "yue", "zh", "unknown",
)  # fmt: skip
# The languages' names, for the form and for the lyrics writer's prompt ("write in Spanish" works
# better than "write in es"); "unknown" is the form's word for "let the model choose".
LANGUAGE_NAMES: Mapping[str, str] = types.MappingProxyType({
    "ar": "Arabic", "az": "Azerbaijani", "bg": "Bulgarian", "bn": "Bengali", "ca": "Catalan", "cs": "Czech",
    "da": "Danish", "de": "German", "el": "Greek", "en": "English", "es": "Spanish", "fa": "Persian",
    "fi": "Finnish", "fr": "French", "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "ht": "Haitian Creole",
    "hu": "Hungarian", "id": "Indonesian", "is": "Icelandic", "it": "Italian", "ja": "Japanese", "ko": "Korean",
    "la": "Latin", "lt": "Lithuanian", "ms": "Malay", "ne": "Nepali", "nl": "Dutch", "no": "Norwegian",
    "pa": "Punjabi", "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sa": "Sanskrit",
    "sk": "Slovak", "sr": "Serbian", "sv": "Swedish", "sw": "Swahili", "ta": "Tamil", "te": "Telugu",
    "th": "Thai", "tl": "Tagalog", "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu", "vi": "Vietnamese",
    "yue": "Cantonese", "zh": "Mandarin Chinese", "unknown": "Other / unknown",
})  # fmt: skip
LANGUAGE_CHOICE_HINT = f"use one of its {len(VOCAL_LANGUAGES)} language codes, like en, es, fr, ja, zh, or unknown"
TIME_SIGNATURES: tuple[str, ...] = ("2", "3", "4", "6")  # beats per bar: 2/4, 3/4, 4/4, 6/8
# The official key list: notes A-G, natural or with an ASCII or Unicode sharp or flat,
# major or minor (ACE-Step 1.5 acestep/constants.py, VALID_KEYSCALES: 70 keys).
_ACCIDENTALS = ("", "#", "b", "\u266f", "\u266d")  # natural, #, b, ♯, ♭
KEYSCALES: tuple[str, ...] = tuple(
    f"{note}{accidental} {mode}" for note in "CDEFGAB" for accidental in _ACCIDENTALS for mode in ("major", "minor")
)
# The keys the form offers: the ASCII spellings of the twelve pitch classes.
FORM_KEYSCALES: tuple[str, ...] = tuple(
    f"{note} {mode}"
    for note in ("C", "C#", "Db", "D", "D#", "Eb", "E", "F", "F#", "Gb", "G", "G#", "Ab", "A", "A#", "Bb", "B")
    for mode in ("major", "minor")
)
# How people type keys and time signatures ("Am", "F# Minor", "B♭ major", "6/8"): read into the
# official spellings above, so the model and the planner see one of the values they were trained on.
_KEY_SPELLING = re.compile(
    r"([A-G])\s*(#|\u266f|b|\u266d|-?sharp|-?flat)?\s*-?\s*(major|minor|maj|min|m)?", re.IGNORECASE
)
_ACCIDENTAL_SPELLINGS = {"#": "#", "\u266f": "#", "sharp": "#", "b": "b", "\u266d": "b", "flat": "b"}
_METER_SPELLING = re.compile(r"(\d{1,2})\s*/\s*(2|4|8|16)")


def normalise_keyscale(text: str) -> str:
    """A key as people type it ("Am", "c minor", "F♯ Minor", "Bb") in the official form ("A minor",
    "F# minor", "Bb major"); a text that is no key comes back unchanged for the check to refuse.

    The ASCII sharp and flat are kept (the form offers them); a lone "M" means major, "m" minor.
    """
    match = _KEY_SPELLING.fullmatch(text.strip()) if len(text) <= MAX_SHORT_CHARS else None
    if match is None:
        return text
    note, accidental, mode = match.groups()
    sign = _ascii_accidental(accidental)
    scale = "minor" if mode is not None and (mode == "m" or mode.lower().startswith("min")) else "major"
    return f"{note.upper()}{sign} {scale}"


def _ascii_accidental(accidental: str | None) -> str:
    if not accidental:
        return ""
    return _ACCIDENTAL_SPELLINGS[accidental.lower().lstrip("-")]


def normalise_timesignature(text: str) -> str:
    """A time signature as written ("4/4", "6/8", "3/4") as the beats per bar the model knows ("4",
    "6", "3"); anything else comes back unchanged for the check to refuse."""
    match = _METER_SPELLING.fullmatch(text.strip()) if len(text) <= MAX_SHORT_CHARS else None
    if match is not None and match.group(1).lstrip("0") in TIME_SIGNATURES:
        return match.group(1).lstrip("0")
    return text.strip() if text.strip() in TIME_SIGNATURES else text


# Instrument tracks the base model can extract or add (acestep/constants.py, TRACK_NAMES).
TRACK_NAMES: tuple[str, ...] = (
    "woodwinds", "brass", "fx", "synth", "strings", "percussion",
    "keyboard", "guitar", "bass", "drums", "backing_vocals", "vocals",
)  # fmt: skip

MAX_FADE_S = 30
WAV_BIT_DEPTHS: tuple[str, ...] = ("16", "24", "32f")  # 32f: 32-bit float
MP3_BITRATES_KBPS: tuple[int, ...] = (128, 192, 256, 320)
TARGET_LUFS_RANGE = (-30.0, -5.0)
TRUE_PEAK_RANGE_DBTP = (-6.0, 0.0)

MAX_LORAS = 16
MAX_LORA_WEIGHT = 2.0
MAX_LORA_KEY_CHARS = 100

# Every text field has a length limit, checked before anything parses it. Fields not named in a
# request's TEXT_LIMITS are short: a name, a key or a choice.
MAX_SHORT_CHARS = 100
MAX_PATH_CHARS = 4_096  # PATH_MAX on Linux: a file input's path
MAX_LIST_ITEMS = 32  # a list field's items (the track names are 12)

# Ranges written once: the requests check them, the form's sliders span them.
GUIDANCE_RANGE = (0.0, MAX_GUIDANCE)  # guidance_scale, source_guidance_scale
UNIT_RANGE = (0.0, 1.0)  # cfg_interval_start/end, audio_cover_strength, cover_noise_strength
# The DiT samplers and guidance rules the official studio offers (sampling/): Euler ODE or SDE; APG or ADG.
INFER_METHODS = ("ode", "sde")
GUIDANCE_METHODS = ("apg", "adg")
# The LM samplers' (the planner's and the lyrics writer's): 0 picks the likeliest token.
TEMPERATURE_RANGE = (0.0, 2.0)
TOP_P_RANGE = (0.0, 1.0)  # above 0, at most 1
MIN_TOP_P_SLIDER = 0.05  # the form's lowest top-p (0 itself is refused)
MAX_TOP_K = 1_000_000  # 0 turns top-k off
MAX_LM_GUIDANCE = 10.0
LM_GUIDANCE_RANGE = (1.0, MAX_LM_GUIDANCE)  # 1 turns it off
CODES_PER_SECOND = 5  # the planner's audio codes run at 5 Hz
MAX_AUDIO_CODE = 63_999  # the audio tokenizer's codebook holds 64,000 codes
# One audio code as the 5 Hz LM writes it and the pipeline reads it; longer numbers are no code token.
AUDIO_CODE_TOKEN = re.compile(r"<\|audio_code_(\d{1,6})\|>")
# "<|audio_code_63999|>" is 20 characters; room for a separator after each.
MAX_AUDIO_CODES_CHARS = MAX_DURATION_S * CODES_PER_SECOND * 24
MAX_LORAS_CHARS = MAX_LORAS * (MAX_LORA_KEY_CHARS + 16)  # "key:weight, " per LoRA
# The file inputs: paths Gradio made from an upload (or a run folder's saved copy).
FILE_FIELDS: tuple[str, ...] = ("src_audio", "reference_audio", "cover_image")

# Cover, Extend and Edit rework a source song: how long, where, and which task.
EXTEND_WHERE: tuple[str, ...] = ("after", "before")
MIN_EXTEND_S = 5
MAX_EXTEND_S = 240
MIN_SEGMENT_S = 1.0  # an edit shorter than this is mostly crossfade
LATENT_FRAME_S = 1 / 25  # one latent frame (the VAE makes 25 a second): the pipeline's time resolution
# Edit's tasks. Repaint works on every checkpoint; the rest only on base checkpoints
# (official README; acestep/constants.py TASK_TYPES_BASE).
EDIT_TASKS: tuple[str, ...] = ("repaint", "extract", "lego", "complete")
BASE_ONLY_TASKS: tuple[str, ...] = ("extract", "lego", "complete")
SEGMENT_TASKS: tuple[str, ...] = ("repaint", "lego")  # the tasks that work on a time segment
# Official repaint modes (ACE-Step 1.5 generate_music.py, _resolve_repaint_config): how much of the
# source the sampler re-imposes outside the segment; strength only shapes "balanced".
REPAINT_MODES: tuple[str, ...] = ("conservative", "balanced", "aggressive")
MAX_N_AVG = 8  # FlowEdit's noise samples per step: each extra one costs two more DiT calls per step


ECHO_CHARS = 80  # an error repeats at most this much of a bad value (lyrics can be 100k characters)
MAX_MESSAGE_CHARS = 1_000  # an error message as the page shows it
_ECHO_DIGITS = 40  # a longer integer is described by its size (repr of a huge int is slow, then refused)


_ECHO_REPR = reprlib.Repr()
_ECHO_REPR.maxstring = _ECHO_REPR.maxother = ECHO_CHARS
_ECHO_REPR.maxlong = _ECHO_DIGITS


def echo(value: Any, bare: bool = False) -> str:
    """A bad value as every error message shows it: its repr (``bare``: a name as it is; a whole
    number as people write it, 5000 not 5000.0), with markup escaped, cut to ``ECHO_CHARS``.

    Gradio renders an error's text as HTML, so an echoed ``<form ...>`` would become a form
    on the page; and a 1 MB value must not come back whole.
    """
    size = ""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > _ECHO_DIGITS * 3.33:
        text = f"a {value.bit_length() * 0.30103:.0f}-digit number"
    elif isinstance(value, str):
        text = value[: 2 * ECHO_CHARS] if bare else repr(value[: 2 * ECHO_CHARS])
        size = f" ({len(value):,} characters)" if len(value) > ECHO_CHARS else ""
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and _integral(value):
        text = figure(value)  # 5000.0 reads "5000", as people write it
    else:
        text = _ECHO_REPR.repr(value)
    escaped = html.escape(text, quote=False)
    if len(escaped) <= ECHO_CHARS:
        return escaped + size
    return re.sub(r"&[a-z]*$", "", escaped[:ECHO_CHARS]) + "…" + size  # never half an entity


def _integral(value: float) -> bool:
    """A whole number small enough to print in full (``figure`` writes it as people do)."""
    return abs(value) < 1e18 and float(value).is_integer()


def safe_message(text: str) -> str:
    """An error's text as the page may show it: no markup (Gradio renders it as HTML), bounded.

    Idempotent, so a message whose values ``echo`` already escaped is shown as it reads.
    """
    plain = html.escape(html.unescape(text), quote=False)
    return plain if len(plain) <= MAX_MESSAGE_CHARS else f"{plain[:MAX_MESSAGE_CHARS]}…"


def check_text_fields(request: Any) -> None:
    """Every text (and list-of-text) field of a request: no NUL character, within its length
    limit (``TEXT_LIMITS``, else ``MAX_SHORT_CHARS``). Checked first, before anything parses them."""
    limits = getattr(type(request), "TEXT_LIMITS", {})
    for field in dataclasses.fields(request):
        value = getattr(request, field.name)
        limit = limits.get(field.name, MAX_SHORT_CHARS)
        if isinstance(value, str):
            check_text(field.name, value, limit)
        elif isinstance(value, tuple):
            if len(value) > MAX_LIST_ITEMS:
                raise ValueError(f"{field.name}: {len(value):,} items is over the limit of {MAX_LIST_ITEMS}")
            for item in value:
                check_text(field.name, item, limit)


def check_text(name: str, value: str, limit: int) -> None:
    """A text value: within ``limit`` characters, no NUL."""
    check_length(name, value, limit)
    if "\x00" in value:
        raise ValueError(f"{name}: holds a null character (\\x00), which no text or file name may contain")


def check_length(name: str, value: str, limit: int) -> None:
    """At most ``limit`` characters, counted before anything parses the text."""
    if len(value) > limit:
        raise ValueError(f"{name}: {len(value):,} characters is over the {limit:,}-character limit")


def figure(value: float) -> str:
    """A bound as people write it: 600, 0.5, 4,294,967,295 (never 4.29497e+09)."""
    if float(value).is_integer() and abs(value) < 1e18:
        whole = int(value)
        return f"{whole:,}" if abs(whole) >= 10_000 else str(whole)
    return f"{value:g}"


def check_range(name: str, value: float, low: float, high: float, unit: str = "", note: str = "") -> None:
    """``low <= value <= high`` (and finite); ``unit`` follows the bounds, ``note`` says more in brackets."""
    bounds = f"between {figure(low)} and {figure(high)}{unit}"
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name}: must be a number {bounds}, got {echo(value)}")
    if not low <= value <= high:
        extra = f" ({note})" if note else ""
        raise ValueError(f"{name}: must be {bounds}{extra}, got {echo(value)}")


def optional_fields(cls: type) -> list[str]:
    """The fields of dataclass ``cls`` that may be None."""
    hints = typing.get_type_hints(cls)
    return [f.name for f in dataclasses.fields(cls) if type(None) in typing.get_args(hints[f.name])]


def coerce_into(cls: type, values: Mapping[str, Any]) -> Any:
    """``cls`` built from loosely typed values and validated; unknown names are refused."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(name) for name in set(values) - fields)
    if unknown:
        raise ValueError(
            f"{echo(unknown[0], bare=True)}: not a setting of {cls.__name__} (known: {', '.join(sorted(fields))})"
        )
    coerced = {name: coerce_value(name, hints[name], value) for name, value in values.items()}
    return cls(**coerced).validate()


def coerce_value(name: str, hint: Any, value: Any) -> Any:
    """Turn a form or JSON value into the type ``hint``, naming the field when it can't."""
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0]
    if optional and (value is None or (isinstance(value, str) and not value.strip())):
        return None
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        raise ValueError(f"{name}: must be true or false, got {echo(value)}")
    if hint is str:
        if value is None:
            return ""
        if name in FILE_FIELDS and not isinstance(value, str):
            raise ValueError(f"{name}: not an uploaded file; upload it (API clients: gradio_client.handle_file)")
        if not isinstance(value, str):
            raise ValueError(f"{name}: must be text, got {echo(value)}")
        return value
    if typing.get_origin(hint) is tuple:
        if value is None:
            return ()
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) for item in items):
            raise ValueError(f"{name}: must be a list of names, got {echo(value)}")
        return tuple(item.strip() for item in items if item.strip())
    if hint in (int, float):
        if hint is int and isinstance(value, int) and not isinstance(value, bool):
            return value  # exact, however large: the range check words what is wrong with it
        try:
            number = _number(name, value)
        except ValueError:
            raise ValueError(f"{name}: must be a {'whole ' if hint is int else ''}number, got {echo(value)}") from None
        if hint is int:
            if not math.isfinite(number) or number != int(number):
                raise ValueError(f"{name}: must be a whole number, got {echo(value)}")
            return int(number)
        return number
    raise TypeError(f"{name}: no coercion for {hint!r}")


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{name}: must be a number, got {echo(value)}")
    try:
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str) and len(value) <= MAX_SHORT_CHARS:
            return float(value.strip())
    except (ValueError, OverflowError):
        pass
    raise ValueError(f"{name}: must be a number, got {echo(value)}")


def check_top_p(name: str, value: float) -> None:
    """A nucleus-sampling mass: above 0, at most 1."""
    if not TOP_P_RANGE[0] < value <= TOP_P_RANGE[1]:
        raise ValueError(f"{name}: must be above 0 and at most 1, got {echo(value)}")


def check_seed(name: str, value: int) -> None:
    """A seed: 0 to ``MAX_SEED``, or ``RANDOM_SEED`` (-1)."""
    if value != RANDOM_SEED:
        check_range(name, value, 0, MAX_SEED, note="or -1 for a random seed")


def require_audio(name: str, path: str, hint: str) -> None:
    """A file input that must be given; ``hint`` tells the musician what to upload."""
    if not path or not path.strip():
        raise ValueError(f"{name}: no audio given; {hint}")


def parse_lora_stack(text: str) -> list[tuple[str, float]]:
    """A LoRA stack (``"key:weight, key:weight"``, weight 1 when left out) as ``(key, weight)`` pairs,
    checked: a key before each weight, weights 0-2, no key twice, at most ``MAX_LORAS``."""
    items: list[tuple[str, float]] = []
    for raw in text.split(","):
        if not raw.strip():
            continue
        key, sep, weight_text = raw.strip().rpartition(":")
        if not sep:
            key, weight_text = weight_text, "1"
        key = key.strip()
        if not key or len(key) > MAX_LORA_KEY_CHARS:
            raise ValueError(f"loras: {echo(raw.strip())} needs a LoRA name or sha256 before the ':'")
        try:
            weight = float(weight_text)
        except ValueError:
            raise ValueError(f"loras: the weight in {echo(raw.strip())} is not a number") from None
        if not math.isfinite(weight) or not 0.0 <= weight <= MAX_LORA_WEIGHT:
            raise ValueError(
                f"loras: the weight of {echo(key)} must be between 0 and {MAX_LORA_WEIGHT:g}, got {echo(weight_text)}"
            )
        if any(key == seen for seen, _ in items):
            raise ValueError(f"loras: {echo(key)} is listed twice")
        items.append((key, weight))
    if len(items) > MAX_LORAS:
        raise ValueError(f"loras: at most {MAX_LORAS} LoRAs at once, got {len(items)}")
    return items


def check_repaint(mode: str, strength: float) -> None:
    """A repaint mode and its strength (0: keep the most of the source, 1: none of it)."""
    if mode not in REPAINT_MODES:
        raise ValueError(f"repaint_mode: must be one of {', '.join(REPAINT_MODES)}, got {echo(mode)}")
    check_range("repaint_strength", strength, *UNIT_RANGE, note="0 keeps the most of the source")


def check_segment(start: float, end: float) -> None:
    """Edit's and FlowEdit's segment: within the longest song, ``end`` after ``start``, long enough."""
    check_range("repainting_start", start, 0.0, MAX_DURATION_S, "s")
    check_range("repainting_end", end, 0.0, MAX_DURATION_S, "s")
    if end <= start:
        raise ValueError(f"repainting_end: {end:g} s must be after repainting_start {start:g} s")
    if end - start < MIN_SEGMENT_S:
        raise ValueError(
            f"repainting_end: the segment {start:g}-{end:g} s is shorter than the {MIN_SEGMENT_S:g} s minimum"
        )


def check_segment_end(end: float, source_s: float) -> None:
    """A segment's end within the source (one latent frame of slack)."""
    if end > source_s + LATENT_FRAME_S:
        raise ValueError(f"repainting_end: {end:g} s is past the end of the source ({source_s:.1f} s)")
