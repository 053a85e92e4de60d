"""Request types, their validation, and the mapping from a request to pipeline arguments.

Every field uses the name ``AceStepPipeline.__call__`` uses, so a request, the form,
the API and ``settings.json`` all speak the pipeline's language. Each default lives
here once.
"""

from __future__ import annotations

import dataclasses
import html
import math
import random
import re
import reprlib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from typing_extensions import Self

MIN_DURATION_S = 10
MAX_DURATION_S = 600
MIN_STEPS = 1
MAX_STEPS = 200
MAX_GUIDANCE = 20.0
MIN_SHIFT = 1.0  # the official guide's shift range is 1-5
MAX_SHIFT = 5.0
MIN_BPM = 30
MAX_BPM = 300
MAX_BATCH = 4
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
LANGUAGE_CHOICE_HINT = f"use one of its {len(VOCAL_LANGUAGES)} language codes, like en, es, fr, ja, zh, or unknown"
TIME_SIGNATURES: tuple[str, ...] = (
    "2",
    "3",
    "4",
    "6",
)  # beats per bar: 2/4, 3/4, 4/4, 6/8
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
# Instrument tracks the base model can extract or add (acestep/constants.py, TRACK_NAMES).
TRACK_NAMES: tuple[str, ...] = (
    "woodwinds", "brass", "fx", "synth", "strings", "percussion",
    "keyboard", "guitar", "bass", "drums", "backing_vocals", "vocals",
)  # fmt: skip

DEFAULT_TARGET_LUFS = -14.0  # the streaming platforms' common target
DEFAULT_TRUE_PEAK_DBTP = -1.0
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

# ACE-Step's convention for a song without vocals: the lyric sheet says so.
INSTRUMENTAL_LYRICS = "[Instrumental]"

# The 5 Hz LM planner's sampling defaults: the official ones (ACE-Step 1.5 inference.py).
LM_TEMPERATURE = 0.85
LM_TOP_P = 0.9
LM_TOP_K = 0  # 0: off
LM_GUIDANCE_SCALE = 2.0
LM_NEGATIVE_PROMPT = "NO USER INPUT"
MAX_LM_GUIDANCE = 10.0
CODES_PER_SECOND = 5  # the planner's audio codes run at 5 Hz
MAX_AUDIO_CODE = 63_999  # the audio tokenizer's codebook holds 64,000 codes
_AUDIO_CODE = re.compile(r"<\|audio_code_(\d{1,6})\|>")  # longer numbers are no code token
# "<|audio_code_63999|>" is 20 characters; room for a separator after each.
MAX_AUDIO_CODES_CHARS = MAX_DURATION_S * CODES_PER_SECOND * 24
MAX_LORAS_CHARS = MAX_LORAS * (MAX_LORA_KEY_CHARS + 16)  # "key:weight, " per LoRA
# The file inputs: paths Gradio made from an upload (or a run folder's saved copy).
FILE_FIELDS: tuple[str, ...] = ("src_audio", "reference_audio", "cover_image")


@dataclass(frozen=True)
class SongRequest:
    """Fields every song mode shares: the text conditions and the sampler.

    Defaults suit the turbo checkpoints; the studio overrides the sampler fields with
    the loaded checkpoint's own defaults.
    """

    prompt: str = ""
    lyrics: str = ""
    vocal_language: str = "en"
    num_inference_steps: int = 8
    guidance_scale: float = 1.0
    shift: float = 3.0
    cfg_interval_start: float = 0.0
    cfg_interval_end: float = 1.0
    seed: int = RANDOM_SEED
    bpm: int | None = None
    keyscale: str = ""
    timesignature: str = ""
    batch_size: int = 1
    # Finishing: loudness mastering of each take (post_process). Opt-in: mastered, Extend
    # and Edit would no longer leave the source bit-identical.
    master: bool = False
    target_lufs: float = DEFAULT_TARGET_LUFS
    true_peak_dbtp: float = DEFAULT_TRUE_PEAK_DBTP
    # Finishing that changes the audio's ends (it also breaks Extend/Edit's bit-identity).
    fade_in_s: float = 0.0
    fade_out_s: float = 0.0
    trim_silence: bool = False
    # Export: the files each take is written as.
    wav_bit_depth: str = "24"
    mp3_bitrate_kbps: int = 320
    opus: bool = False
    cover_image: str = ""  # a PNG or JPEG embedded as cover art in every file
    # The LoRA stack: "key:weight" items, comma-separated (key: a LoRA's name or its sha256, 8+ hex
    # characters; weight 0-2, 1 when left out). Empty: no LoRA, exactly the base model's output.
    loras: str = ""
    lora_triggers: bool = False  # append the stack's trigger words to the prompt

    mode: typing.ClassVar[str] = ""
    # Text fields longer than MAX_SHORT_CHARS, by name (every song mode's, in one table).
    TEXT_LIMITS: typing.ClassVar[Mapping[str, int]] = types.MappingProxyType(
        {
            "prompt": MAX_PROMPT_CHARS,
            "lyrics": MAX_LYRICS_CHARS,
            "source_prompt": MAX_PROMPT_CHARS,
            "source_lyrics": MAX_LYRICS_CHARS,
            "lm_negative_prompt": MAX_PROMPT_CHARS,
            "audio_codes": MAX_AUDIO_CODES_CHARS,
            "loras": MAX_LORAS_CHARS,
            **dict.fromkeys(FILE_FIELDS, MAX_PATH_CHARS),
        }
    )

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Self:
        """Build a validated request from loosely typed values (a form, the API, JSON).

        Unknown names are refused rather than ignored: a typo would otherwise
        silently fall back to a default.
        """
        values = dict(values)
        for name in _optional_fields(cls):
            if values.get(name) in (0, "0"):
                # A cleared number field arrives as 0, and the pipeline itself reads a
                # bpm of 0 as "not given": for a field that may be unset, 0 means unset.
                values[name] = None
        return coerce_into(cls, values)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def validate(self) -> Self:
        check_text_fields(self)
        if self.vocal_language not in VOCAL_LANGUAGES:
            raise ValueError(
                f"vocal_language: {echo(self.vocal_language)} is not a language ACE-Step sings; {LANGUAGE_CHOICE_HINT}"
            )
        _check_range("num_inference_steps", self.num_inference_steps, MIN_STEPS, MAX_STEPS)
        _check_range("guidance_scale", self.guidance_scale, 0.0, MAX_GUIDANCE)
        _check_range("shift", self.shift, MIN_SHIFT, MAX_SHIFT)
        _check_range("cfg_interval_start", self.cfg_interval_start, 0.0, 1.0)
        _check_range("cfg_interval_end", self.cfg_interval_end, 0.0, 1.0)
        if self.cfg_interval_start > self.cfg_interval_end:
            raise ValueError(
                f"cfg_interval_start: {self.cfg_interval_start} is after cfg_interval_end {self.cfg_interval_end}"
            )
        if self.seed != RANDOM_SEED:
            _check_range("seed", self.seed, 0, MAX_SEED, note="or -1 for a random seed")
        if self.bpm is not None:
            _check_range("bpm", self.bpm, MIN_BPM, MAX_BPM, note="or empty to let the model choose")
        if self.keyscale and self.keyscale not in KEYSCALES:
            raise ValueError(f"keyscale: {echo(self.keyscale)} is not a key like 'C major' or 'F# minor'")
        if self.timesignature and self.timesignature not in TIME_SIGNATURES:
            raise ValueError(
                f"timesignature: {echo(self.timesignature)} is not one of {', '.join(TIME_SIGNATURES)} (beats per bar)"
            )
        _check_range("batch_size", self.batch_size, 1, MAX_BATCH)
        _check_range("target_lufs", self.target_lufs, *TARGET_LUFS_RANGE, " LUFS")
        _check_range("true_peak_dbtp", self.true_peak_dbtp, *TRUE_PEAK_RANGE_DBTP, " dBTP")
        _check_range("fade_in_s", self.fade_in_s, 0.0, MAX_FADE_S, "s")
        _check_range("fade_out_s", self.fade_out_s, 0.0, MAX_FADE_S, "s")
        if self.wav_bit_depth not in WAV_BIT_DEPTHS:
            raise ValueError(
                f"wav_bit_depth: must be one of {', '.join(WAV_BIT_DEPTHS)}, got {echo(self.wav_bit_depth)}"
            )
        self.lora_items()
        if self.mp3_bitrate_kbps not in MP3_BITRATES_KBPS:
            choices = ", ".join(map(str, MP3_BITRATES_KBPS))
            raise ValueError(f"mp3_bitrate_kbps: must be one of {choices}, got {echo(self.mp3_bitrate_kbps)}")
        return self

    def lora_items(self) -> list[tuple[str, float]]:
        """The LoRA stack as ``(key, weight)`` pairs, checked: weights 0-2, no key twice."""
        items: list[tuple[str, float]] = []
        for raw in self.loras.split(","):
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
                    f"loras: the weight of {echo(key)} must be between 0 and {MAX_LORA_WEIGHT:g}, "
                    f"got {echo(weight_text)}"
                )
            if any(key == seen for seen, _ in items):
                raise ValueError(f"loras: {echo(key)} is listed twice")
            items.append((key, weight))
        if len(items) > MAX_LORAS:
            raise ValueError(f"loras: at most {MAX_LORAS} LoRAs at once, got {len(items)}")
        return items

    def with_seed(self, seed: int) -> Self:
        return dataclasses.replace(self, seed=seed)

    def resolve_seed(self) -> Self:
        """Replace a random seed (-1) by a concrete one, so the run can be reproduced."""
        if self.seed != RANDOM_SEED:
            return self
        return self.with_seed(random.randint(0, MAX_SEED - MAX_BATCH))

    def take_seeds(self) -> list[int]:
        """Take i of a batch uses seed + i, so one seed names the whole batch."""
        if self.seed == RANDOM_SEED:
            raise ValueError("seed: resolve the random seed before generating")
        return [(self.seed + i) % (MAX_SEED + 1) for i in range(self.batch_size)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def pipeline_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``AceStepPipeline.__call__`` (no generator, callbacks or audio).

        A batch is passed as lists of prompts, which is how the pipeline batches.
        """
        return {
            "prompt": [self.prompt] * self.batch_size,
            "lyrics": [self.lyrics] * self.batch_size,
            "vocal_language": self.vocal_language,
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "shift": self.shift,
            "cfg_interval_start": self.cfg_interval_start,
            "cfg_interval_end": self.cfg_interval_end,
            "bpm": self.bpm,
            "keyscale": self.keyscale or None,
            "timesignature": self.timesignature or None,
        }


@dataclass(frozen=True)
class GenerateRequest(SongRequest):
    """Text (+ lyrics) to a song."""

    instrumental: bool = False
    audio_duration: float = 60.0
    # The planner ("thinking"): the 5 Hz LM fills blank metadata, may rewrite the caption,
    # and plans the song as audio codes before the DiT renders it.
    think: bool = False
    lm_rewrite_caption: bool = True
    lm_temperature: float = LM_TEMPERATURE
    lm_top_p: float = LM_TOP_P
    lm_top_k: int = LM_TOP_K
    lm_guidance_scale: float = LM_GUIDANCE_SCALE
    lm_negative_prompt: str = LM_NEGATIVE_PROMPT
    # A plan's codes (``<|audio_code_N|>``...), replayed as they are: no planning, same song.
    audio_codes: str = ""

    mode: typing.ClassVar[str] = "generate"

    def validate(self) -> Self:
        if not self.prompt.strip() and not self.lyrics.strip() and not self.instrumental:
            raise ValueError("prompt: describe the music (style, instruments, mood) or give lyrics")
        super().validate()
        _check_range("audio_duration", self.audio_duration, MIN_DURATION_S, MAX_DURATION_S, "s")
        _check_range("lm_temperature", self.lm_temperature, 0.0, 2.0, note="0 picks the likeliest token")
        if not 0.0 < self.lm_top_p <= 1.0:
            raise ValueError(f"lm_top_p: must be above 0 and at most 1, got {echo(self.lm_top_p)}")
        _check_range("lm_top_k", self.lm_top_k, 0, 1_000_000, note="0 turns it off")
        _check_range("lm_guidance_scale", self.lm_guidance_scale, 1.0, MAX_LM_GUIDANCE, note="1 turns it off")
        if self.audio_codes.strip():
            self.codes()
        return self

    def codes(self) -> tuple[int, ...]:
        """The replayed plan's codes, checked: only code tokens, five per second of the duration."""
        text = self.audio_codes.strip()
        codes = tuple(int(n) for n in _AUDIO_CODE.findall(text))
        if _AUDIO_CODE.sub("", text).strip():
            raise ValueError(
                "audio_codes: holds something other than audio code tokens (audio_code_N); clear it to plan again"
            )
        expected = round(self.audio_duration) * CODES_PER_SECOND
        if len(codes) != expected:
            raise ValueError(
                f"audio_codes: {len(codes)} codes make {len(codes) / CODES_PER_SECOND:g} s, but the duration asks for "
                f"{expected} ({round(self.audio_duration)} s); set the duration to the plan's or clear the codes"
            )
        bad = [code for code in codes if code > MAX_AUDIO_CODE]
        if bad:
            raise ValueError(f"audio_codes: {bad[0]} is outside 0-{MAX_AUDIO_CODE}")
        return codes

    def pipeline_kwargs(self) -> dict[str, Any]:
        kwargs = super().pipeline_kwargs()
        kwargs["audio_duration"] = float(self.audio_duration)
        if self.audio_codes.strip():
            kwargs["audio_codes"] = [self.audio_codes.strip()] * self.batch_size
        if self.instrumental:
            kwargs["lyrics"] = [INSTRUMENTAL_LYRICS] * self.batch_size
            kwargs["vocal_language"] = "unknown"
        return kwargs


ECHO_CHARS = 80  # an error repeats at most this much of a bad value (lyrics can be 100k characters)
MAX_MESSAGE_CHARS = 1_000  # an error message as the page shows it
_ECHO_DIGITS = 40  # a longer integer is described by its size (repr of a huge int is slow, then refused)


_ECHO_REPR = reprlib.Repr()
_ECHO_REPR.maxstring = _ECHO_REPR.maxother = ECHO_CHARS
_ECHO_REPR.maxlong = _ECHO_DIGITS


def echo(value: Any, bare: bool = False) -> str:
    """A bad value as every error message shows it: its repr (``bare``: a name as it is),
    with markup escaped, cut to ``ECHO_CHARS``.

    Gradio renders an error's text as HTML, so an echoed ``<form ...>`` would become a form
    on the page; and a 1 MB value must not come back whole.
    """
    size = ""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > _ECHO_DIGITS * 3.33:
        text = f"a {value.bit_length() * 0.30103:.0f}-digit number"
    elif isinstance(value, str):
        text = value[: 2 * ECHO_CHARS] if bare else repr(value[: 2 * ECHO_CHARS])
        size = f" ({len(value):,} characters)" if len(value) > ECHO_CHARS else ""
    else:
        text = _ECHO_REPR.repr(value)
    escaped = html.escape(text, quote=False)
    if len(escaped) <= ECHO_CHARS:
        return escaped + size
    return re.sub(r"&[a-z]*$", "", escaped[:ECHO_CHARS]) + "…" + size  # never half an entity


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
            _check_text(field.name, value, limit)
        elif isinstance(value, tuple):
            if len(value) > MAX_LIST_ITEMS:
                raise ValueError(f"{field.name}: {len(value):,} items is over the limit of {MAX_LIST_ITEMS}")
            for item in value:
                _check_text(field.name, item, limit)


def _check_text(name: str, value: str, limit: int) -> None:
    _check_length(name, value, limit)
    if "\x00" in value:
        raise ValueError(f"{name}: holds a null character (\\x00), which no text or file name may contain")


def _check_length(name: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise ValueError(f"{name}: {len(value):,} characters is over the {limit:,}-character limit")


def _check_range(name: str, value: float, low: float, high: float, unit: str = "", note: str = "") -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name}: must be a number between {low:g} and {high:g}{unit}, got {echo(value)}")
    if not low <= value <= high:
        extra = f" ({note})" if note else ""
        raise ValueError(f"{name}: must be between {low:g} and {high:g}{unit}{extra}, got {echo(value)}")


def _optional_fields(cls: type) -> list[str]:
    hints = typing.get_type_hints(cls)
    return [f.name for f in dataclasses.fields(cls) if type(None) in typing.get_args(hints[f.name])]


def coerce_into(cls: type, values: Mapping[str, Any]):
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


# Cover, Extend and Edit rework a source song. Their audio arrives as file paths; the
# studio decodes them (``audio_io``) and checks lengths with ``check_source`` before any
# model time.
EXTEND_WHERE: tuple[str, ...] = ("after", "before")
MIN_EXTEND_S = 5
MAX_EXTEND_S = 240
MIN_SEGMENT_S = 1.0  # an edit shorter than this is mostly crossfade
# The official default (ACE-Step 1.5 GenerationParams): follow the source fully.
DEFAULT_COVER_STRENGTH = 1.0
LATENT_FRAME_S = 1920 / 48_000  # one latent frame: the pipeline's time resolution


@dataclass(frozen=True)
class CoverRequest(SongRequest):
    """A source song re-made in a new style, optionally with new lyrics and a timbre reference."""

    src_audio: str = ""
    reference_audio: str = ""
    audio_cover_strength: float = DEFAULT_COVER_STRENGTH
    audio_duration: float | None = None  # None: the source's length

    mode: typing.ClassVar[str] = "cover"

    def validate(self) -> Self:
        _require_audio("src_audio", self.src_audio, "upload the song to cover")
        super().validate()
        _check_range("audio_cover_strength", self.audio_cover_strength, 0.0, 1.0)
        if self.audio_duration is not None:
            _check_range("audio_duration", self.audio_duration, MIN_DURATION_S, MAX_DURATION_S, "s")
        return self

    def pipeline_kwargs(self) -> dict[str, Any]:
        return {**super().pipeline_kwargs(), "task_type": "cover", "audio_cover_strength": self.audio_cover_strength}


@dataclass(frozen=True)
class ExtendRequest(SongRequest):
    """Continue a song after its end or before its start; the seed itself stays as it was."""

    src_audio: str = ""
    extend_seconds: float = 30.0
    extend_where: str = "after"

    mode: typing.ClassVar[str] = "extend"

    def validate(self) -> Self:
        _require_audio("src_audio", self.src_audio, "upload the song to extend")
        super().validate()
        _check_range("extend_seconds", self.extend_seconds, MIN_EXTEND_S, MAX_EXTEND_S, "s")
        if self.extend_where not in EXTEND_WHERE:
            raise ValueError(f"extend_where: must be 'after' or 'before', got {echo(self.extend_where)}")
        return self

    def check_source(self, source_s: float) -> None:
        total = source_s + self.extend_seconds
        if total > MAX_DURATION_S + LATENT_FRAME_S:
            raise ValueError(
                f"extend_seconds: {self.extend_seconds:g} s added to a {source_s:.1f} s song makes "
                f"{total:.1f} s; the limit is {MAX_DURATION_S} s"
            )

    def pipeline_kwargs(self) -> dict[str, Any]:
        # The new span is repainted on a zero-padded copy of the seed: a repaint window
        # past the source's end would be clamped, not extended (FACTS).
        return {**super().pipeline_kwargs(), "task_type": "repaint"}


# Edit's tasks. Repaint works on every checkpoint; the rest only on base checkpoints
# (official README; acestep/constants.py TASK_TYPES_BASE).
EDIT_TASKS: tuple[str, ...] = ("repaint", "extract", "lego", "complete")
BASE_ONLY_TASKS: tuple[str, ...] = ("extract", "lego", "complete")
SEGMENT_TASKS: tuple[str, ...] = ("repaint", "lego")  # the tasks that work on a time segment


@dataclass(frozen=True)
class EditRequest(SongRequest):
    """Re-make one time segment with new words or style; the rest stays untouched.

    On a base checkpoint it can also extract one instrument's track (``extract``), write
    a new track over a segment (``lego``) or complete a lone track with others
    (``complete``); those return the model's output as it is, with nothing spliced.
    """

    src_audio: str = ""
    repainting_start: float = 0.0
    repainting_end: float = 10.0
    task_type: str = "repaint"
    track_name: str = ""
    complete_track_classes: tuple[str, ...] = ()

    mode: typing.ClassVar[str] = "edit"

    def validate(self) -> Self:
        _require_audio("src_audio", self.src_audio, "upload the song to edit")
        super().validate()
        if self.task_type not in EDIT_TASKS:
            raise ValueError(f"task_type: must be one of {', '.join(EDIT_TASKS)}, got {echo(self.task_type)}")
        if self.task_type in ("extract", "lego") and self.track_name not in TRACK_NAMES:
            raise ValueError(
                f"track_name: choose one of {', '.join(TRACK_NAMES)} for {self.task_type}, got {echo(self.track_name)}"
            )
        for name in self.complete_track_classes:
            if name not in TRACK_NAMES:
                raise ValueError(f"complete_track_classes: {echo(name)} is not one of {', '.join(TRACK_NAMES)}")
        if self.task_type not in SEGMENT_TASKS:
            return self
        _check_range("repainting_start", self.repainting_start, 0.0, MAX_DURATION_S, "s")
        _check_range("repainting_end", self.repainting_end, 0.0, MAX_DURATION_S, "s")
        if self.repainting_end <= self.repainting_start:
            raise ValueError(
                f"repainting_end: {self.repainting_end:g} s must be after repainting_start {self.repainting_start:g} s"
            )
        if self.repainting_end - self.repainting_start < MIN_SEGMENT_S:
            raise ValueError(
                f"repainting_end: the segment {self.repainting_start:g}-{self.repainting_end:g} s is shorter "
                f"than the {MIN_SEGMENT_S:g} s minimum"
            )
        return self

    def check_source(self, source_s: float) -> None:
        if self.task_type in SEGMENT_TASKS and self.repainting_end > source_s + LATENT_FRAME_S:
            raise ValueError(
                f"repainting_end: {self.repainting_end:g} s is past the end of the source ({source_s:.1f} s)"
            )

    def pipeline_kwargs(self) -> dict[str, Any]:
        kwargs = {**super().pipeline_kwargs(), "task_type": self.task_type}
        if self.task_type in SEGMENT_TASKS:
            kwargs.update(repainting_start=self.repainting_start, repainting_end=self.repainting_end)
        if self.task_type in ("extract", "lego"):
            kwargs["track_name"] = self.track_name
        if self.task_type == "complete":
            kwargs["complete_track_classes"] = list(self.complete_track_classes)
        return kwargs


REQUEST_TYPES: dict[str, type[SongRequest]] = {
    cls.mode: cls for cls in (GenerateRequest, CoverRequest, ExtendRequest, EditRequest)
}


def _require_audio(name: str, path: str, hint: str) -> None:
    if not path or not path.strip():
        raise ValueError(f"{name}: no audio given; {hint}")
