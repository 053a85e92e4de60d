"""The planner's plan: its sampling settings, the metadata and audio codes it decides, and
the parsing and checking of what an LM wrote.

A plan is plain data (no model here): the studio saves it in settings.json, replays it
("Reuse its plan") and hands its fields to the pipeline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from typing_extensions import Self

from modes import LM_GUIDANCE_SCALE, LM_NEGATIVE_PROMPT, LM_TEMPERATURE, LM_TOP_K, LM_TOP_P
from validation import (
    CODES_PER_SECOND,
    KEYSCALES,
    LM_GUIDANCE_RANGE,
    MAX_AUDIO_CODE,
    MAX_BPM,
    MAX_DURATION_S,
    MAX_PROMPT_CHARS,
    MAX_TOP_K,
    MIN_BPM,
    MIN_DURATION_S,
    TEMPERATURE_RANGE,
    TIME_SIGNATURES,
    VOCAL_LANGUAGES,
    check_length,
    check_range,
    check_top_p,
)

# The think block's fields, in the order the LM was trained on (yaml.dump's sorted keys).
FIELDS = ("bpm", "caption", "duration", "keyscale", "language", "timesignature")
DEFAULT_NEGATIVE_PROMPT = LM_NEGATIVE_PROMPT
MAX_CAPTION_TOKENS = 512  # the official limit on a generated caption


@dataclass(frozen=True)
class PlannerSettings:
    """How the LM samples. Defaults are the official ones (ACE-Step 1.5 inference.py)."""

    temperature: float = LM_TEMPERATURE  # 0: greedy
    top_p: float = LM_TOP_P  # 1.0: off
    top_k: int = LM_TOP_K  # 0: off
    lm_guidance_scale: float = LM_GUIDANCE_SCALE  # logits = uncond + s * (cond - uncond); 1.0 skips the second pass
    lm_negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    # Fields the LM may write when the user left them blank; "caption" lets it rewrite the caption.
    infer: frozenset[str] = frozenset(FIELDS)
    max_caption_tokens: int = MAX_CAPTION_TOKENS

    def validate(self) -> Self:
        check_range("temperature", self.temperature, *TEMPERATURE_RANGE)
        check_top_p("top_p", self.top_p)
        check_range("top_k", self.top_k, 0, MAX_TOP_K)
        check_range("lm_guidance_scale", self.lm_guidance_scale, *LM_GUIDANCE_RANGE)
        check_length("lm_negative_prompt", self.lm_negative_prompt, MAX_PROMPT_CHARS)
        unknown = set(self.infer) - set(FIELDS)
        if unknown:
            raise ValueError(f"infer: {sorted(unknown)!r} are not plan fields; choose from {', '.join(FIELDS)}")
        check_range("max_caption_tokens", self.max_caption_tokens, 1, MAX_CAPTION_TOKENS)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "infer": sorted(self.infer)}


@dataclass(frozen=True)
class Plan:
    """What the LM decided. ``codes`` is empty for a metadata-only plan (``Planner.plan_from_idea``)."""

    bpm: int
    keyscale: str
    timesignature: str
    language: str
    duration: int  # seconds
    caption: str
    codes: tuple[int, ...] = ()

    def validate(self) -> Self:
        _check_fields(self.metadata())
        expected = self.duration * CODES_PER_SECOND
        if self.codes and len(self.codes) != expected:
            raise ValueError(f"codes: expected {expected} codes for {self.duration} s, got {len(self.codes)}")
        bad = [c for c in self.codes if not 0 <= c <= MAX_AUDIO_CODE]
        if bad:
            raise ValueError(f"codes: {bad[0]!r} is outside 0-{MAX_AUDIO_CODE}")
        return self

    def metadata(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}

    @property
    def audio_codes(self) -> str:
        """The string ``AceStepPipeline(audio_codes=...)`` parses (it finds ``<|audio_code_N|>``)."""
        return "".join(f"<|audio_code_{code}|>" for code in self.codes)

    def pipeline_kwargs(self) -> dict[str, Any]:
        """The plan in the pipeline's words; with codes the pipeline runs text2music as a cover."""
        kwargs = {
            "bpm": self.bpm,
            "keyscale": self.keyscale,
            "timesignature": self.timesignature,
            "vocal_language": self.language,
            "audio_duration": float(self.duration),
        }
        if self.codes:
            kwargs["audio_codes"] = self.audio_codes
        return kwargs

    def request_fields(self) -> dict[str, Any]:
        """The plan as ``GenerateRequest`` fields: its caption, metadata and codes in the user's place."""
        return {
            "prompt": self.caption,
            "bpm": self.bpm,
            "keyscale": self.keyscale,
            "timesignature": self.timesignature,
            "vocal_language": self.language,
            "audio_duration": float(self.duration),
            "audio_codes": self.audio_codes,
        }

    def think_block(self, fields: Sequence[str] = FIELDS) -> str:
        """The sorted YAML think block phase 2 reads, formatted as in training: official
        ``_format_metadata_as_cot`` (acestep/llm_inference.py) dumps the fields it has with
        ``yaml.dump(allow_unicode=True, sort_keys=True)``, digit strings as numbers."""
        import yaml

        items = {name: value for name, value in self.metadata().items() if name in fields}
        items.update({name: int(items[name]) for name in ("timesignature",) if name in items})
        return f"<think>\n{yaml.dump(items, allow_unicode=True, sort_keys=True).strip()}\n</think>"

    def to_dict(self) -> dict[str, Any]:
        return {**self.metadata(), "codes": list(self.codes)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Self:
        unknown = set(values) - {*FIELDS, "codes"}
        if unknown:
            raise ValueError(f"plan: unknown fields {sorted(unknown)!r}")
        missing = [name for name in FIELDS if name not in values]
        if missing:
            raise ValueError(f"plan: missing {', '.join(missing)}")
        fields = _check_fields({name: values[name] for name in FIELDS})
        codes = tuple(int(code) for code in values.get("codes") or ())
        return cls(**fields, codes=codes).validate()


def parse_think(text: str, fields: Sequence[str] = FIELDS) -> dict[str, Any]:
    """The metadata in an LM's think block (``fields`` of it), typed and range-checked.

    Continuation lines (indented, as yaml.dump wraps long captions) join the field above.
    """
    end = text.find("</think>")
    if end < 0:
        raise ValueError("planner output has no </think>: the LM stopped before finishing its metadata")
    body = text[:end]
    start = body.find("<think>")
    if start >= 0:
        body = body[start + len("<think>") :]
    raw: dict[str, list[str]] = {}
    key = None
    for line in body.splitlines():
        if not line.strip():
            continue
        if line[0] in " \t":
            if key is not None:
                raw[key].append(line.strip())
            continue
        name, colon, value = line.partition(":")
        key = name.strip().lower() if colon else None
        if key is not None:
            raw[key] = [value.strip()]
    missing = [name for name in fields if name not in raw]
    if missing:
        raise ValueError(f"planner output has no {', '.join(missing)}")
    return {name: check_field(name, _unquote(" ".join(part for part in raw[name] if part))) for name in fields}


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1].replace("''", "'")
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value


_RANGES = {"bpm": (MIN_BPM, MAX_BPM), "duration": (MIN_DURATION_S, MAX_DURATION_S)}
_CHOICES = {"keyscale": KEYSCALES, "language": VOCAL_LANGUAGES, "timesignature": TIME_SIGNATURES}


def check_field(name: str, value: Any) -> Any:
    """One metadata value, typed (bpm and duration as int, the rest as str) and checked."""
    if name in _RANGES:
        low, high = _RANGES[name]
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ValueError(f"{name}: {value!r} is not a whole number") from None
        if not low <= number <= high:
            raise ValueError(f"{name}: {number} out of range {low}-{high}")
        return number
    text = str(value).strip()
    if name == "timesignature":
        text = text.removesuffix("/4")  # the official code also accepts "4/4"
    if name in _CHOICES and text not in _CHOICES[name]:
        raise ValueError(f"{name}: {text!r} is not one of the LM's {len(_CHOICES[name])} values")
    return text


def _check_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {name: check_field(name, fields[name]) for name in FIELDS}
