"""The song requests (one frozen dataclass per mode, ``REQUEST_TYPES`` by mode name), their
validation, and the mapping from a request to pipeline arguments.

Every field uses the name ``AceStepPipeline.__call__`` uses, so a request, the form, the API and
``settings.json`` speak the pipeline's language. Each default lives here once; every limit, range,
name list and the checks' wording live in ``validation``.
"""

from __future__ import annotations

import dataclasses
import random
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from typing_extensions import Self

from sampling.schedule import pipeline_cfg_interval
from validation import (
    AUDIO_CODE_TOKEN,
    CODES_PER_SECOND,
    EDIT_TASKS,
    EXTEND_WHERE,
    FILE_FIELDS,
    GUIDANCE_METHODS,
    GUIDANCE_RANGE,
    INFER_METHODS,
    KEYSCALES,
    LANGUAGE_CHOICE_HINT,
    LATENT_FRAME_S,
    LM_GUIDANCE_RANGE,
    MAX_AUDIO_CODE,
    MAX_AUDIO_CODES_CHARS,
    MAX_BATCH,
    MAX_BPM,
    MAX_DURATION_S,
    MAX_EXTEND_S,
    MAX_FADE_S,
    MAX_LORAS_CHARS,
    MAX_LYRICS_CHARS,
    MAX_N_AVG,
    MAX_PATH_CHARS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_SHIFT,
    MAX_STEPS,
    MAX_TOP_K,
    MIN_BPM,
    MIN_DURATION_S,
    MIN_EXTEND_S,
    MIN_SHIFT,
    MIN_STEPS,
    MP3_BITRATES_KBPS,
    RANDOM_SEED,
    SEGMENT_TASKS,
    TARGET_LUFS_RANGE,
    TEMPERATURE_RANGE,
    TIME_SIGNATURES,
    TRACK_NAMES,
    TRUE_PEAK_RANGE_DBTP,
    UNIT_RANGE,
    VOCAL_LANGUAGES,
    WAV_BIT_DEPTHS,
    check_range,
    check_repaint,
    check_seed,
    check_segment,
    check_segment_end,
    check_text_fields,
    check_top_p,
    coerce_into,
    echo,
    normalise_keyscale,
    normalise_timesignature,
    optional_fields,
    parse_lora_stack,
    require_audio,
)

DEFAULT_TARGET_LUFS = -14.0  # the streaming platforms' common target
DEFAULT_TRUE_PEAK_DBTP = -1.0
# The 5 Hz LM planner's sampling defaults: the official ones (ACE-Step 1.5 inference.py).
LM_TEMPERATURE = 0.85
LM_TOP_P = 0.9
LM_TOP_K = 0  # 0: off
LM_GUIDANCE_SCALE = 2.0
LM_NEGATIVE_PROMPT = "NO USER INPUT"
# ACE-Step's convention for a song without vocals: the lyric sheet says so.
INSTRUMENTAL_LYRICS = "[Instrumental]"
# The official default (ACE-Step 1.5 GenerationParams): follow the source fully.
DEFAULT_COVER_STRENGTH = 1.0
# Official repaint's defaults (generate_music.py generate_music; see repaint_steps).
DEFAULT_REPAINT_MODE = "balanced"
DEFAULT_REPAINT_STRENGTH = 0.5
N_MAX_FRACTION = 33 / 50  # FlowEdit: the paper's SD3 setting, edit the last 33 of 50 steps


@dataclass(frozen=True)
class SongRequest:
    """Fields every song mode shares: the text conditions and the sampler. Defaults suit the
    turbo checkpoints; the studio overrides the sampler fields with the checkpoint's own."""

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
    # Sampling as the official studio has it (sampling/): Euler ODE or SDE, APG or ADG guidance (base/SFT),
    # DCW (None: the checkpoint's default, on for turbo as official; the studio saves what ran).
    infer_method: str = "ode"
    guidance_method: str = "apg"
    dcw_enabled: bool | None = None
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

    def __post_init__(self) -> None:
        # Keys and meters as people type them ("Am", "6/8") become the official spellings, which are
        # what the model sees and what settings.json saves; what is no key stays for validate() to refuse.
        if isinstance(self.keyscale, str):
            object.__setattr__(self, "keyscale", normalise_keyscale(self.keyscale))
        if isinstance(self.timesignature, str):
            object.__setattr__(self, "timesignature", normalise_timesignature(self.timesignature))

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Self:
        """Build a validated request from loosely typed values (a form, the API, JSON).

        Unknown names are refused rather than ignored: a typo would otherwise
        silently fall back to a default.
        """
        values = dict(values)
        for name in optional_fields(cls):
            if values.get(name) in (0, "0") and not isinstance(values.get(name), bool):
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
        check_range("num_inference_steps", self.num_inference_steps, MIN_STEPS, MAX_STEPS)
        check_range("guidance_scale", self.guidance_scale, *GUIDANCE_RANGE)
        check_range("shift", self.shift, MIN_SHIFT, MAX_SHIFT)
        check_range("cfg_interval_start", self.cfg_interval_start, *UNIT_RANGE)
        check_range("cfg_interval_end", self.cfg_interval_end, *UNIT_RANGE)
        if self.cfg_interval_start > self.cfg_interval_end:
            raise ValueError(
                f"cfg_interval_start: {self.cfg_interval_start} is after cfg_interval_end {self.cfg_interval_end}"
            )
        if self.infer_method not in INFER_METHODS:
            raise ValueError(
                f"infer_method: must be 'ode' (Euler) or 'sde' (stochastic), got {echo(self.infer_method)}"
            )
        if self.guidance_method not in GUIDANCE_METHODS:
            raise ValueError(f"guidance_method: must be 'apg' or 'adg', got {echo(self.guidance_method)}")
        check_seed("seed", self.seed)
        if self.bpm is not None:
            check_range("bpm", self.bpm, MIN_BPM, MAX_BPM, note="or empty to let the model choose")
        if self.keyscale and self.keyscale not in KEYSCALES:
            raise ValueError(f"keyscale: {echo(self.keyscale)} is not a key like 'C major', 'Am' or 'F# minor'")
        if self.timesignature and self.timesignature not in TIME_SIGNATURES:
            raise ValueError(
                f"timesignature: {echo(self.timesignature)} is not a meter the model knows: "
                f"{', '.join(TIME_SIGNATURES)} beats per bar, or 2/4, 3/4, 4/4, 6/8"
            )
        check_range("batch_size", self.batch_size, 1, MAX_BATCH)
        check_range("target_lufs", self.target_lufs, *TARGET_LUFS_RANGE, " LUFS")
        check_range("true_peak_dbtp", self.true_peak_dbtp, *TRUE_PEAK_RANGE_DBTP, " dBTP")
        check_range("fade_in_s", self.fade_in_s, 0.0, MAX_FADE_S, "s")
        check_range("fade_out_s", self.fade_out_s, 0.0, MAX_FADE_S, "s")
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
        return parse_lora_stack(self.loras)

    @property
    def plans(self) -> bool:
        """Whether this run asks the planner first: Think on, and no plan's codes to replay."""
        return bool(getattr(self, "think", False)) and not str(getattr(self, "audio_codes", "")).strip()

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

    @property
    def cfg_interval(self) -> tuple[float, float]:
        return self.cfg_interval_start, self.cfg_interval_end

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
            # Official guides while t is in the interval, diffusers while 1 - t is: hand it the mirror.
            **pipeline_cfg_interval(*self.cfg_interval),
            "bpm": self.bpm,
            "keyscale": self.keyscale or None,
            "timesignature": self.timesignature or None,
        }


@dataclass(frozen=True)
class GenerateRequest(SongRequest):
    """Text (+ lyrics) to a song."""

    instrumental: bool = False
    # None (or the official UI's -1): Think's planner chooses the length, ending the song on its own
    # (official acestep/gradio_ui/interfaces/generation.py: duration -1); without Think a length is needed.
    audio_duration: float | None = 60.0
    reference_audio: str = ""  # a timbre reference, as on Cover (rework.timbre_reference)
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

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Self:
        values = dict(values)
        if values.get("audio_duration") in (-1, "-1", -1.0):
            values["audio_duration"] = None  # the official UI's "the LM decides"
        return super().from_values(values)

    def validate(self) -> Self:
        if not self.prompt.strip() and not self.lyrics.strip() and not self.instrumental:
            raise ValueError("prompt: describe the music (style, instruments, mood) or give lyrics")
        super().validate()
        if self.audio_duration is None and not self.plans:
            raise ValueError(
                f"audio_duration: give the song's length ({MIN_DURATION_S}-{MAX_DURATION_S} s); only Think "
                "(with no plan to replay) lets the planner choose it"
            )
        if self.audio_duration is not None:
            check_range("audio_duration", self.audio_duration, MIN_DURATION_S, MAX_DURATION_S, "s")
        check_range("lm_temperature", self.lm_temperature, *TEMPERATURE_RANGE, note="0 picks the likeliest token")
        check_top_p("lm_top_p", self.lm_top_p)
        check_range("lm_top_k", self.lm_top_k, 0, MAX_TOP_K, note="0 turns it off")
        check_range("lm_guidance_scale", self.lm_guidance_scale, *LM_GUIDANCE_RANGE, note="1 turns it off")
        if self.audio_codes.strip():
            self.codes()
        return self

    def codes(self) -> tuple[int, ...]:
        """The replayed plan's codes, checked: only code tokens, five per second of the duration."""
        text = self.audio_codes.strip()
        codes = tuple(int(n) for n in AUDIO_CODE_TOKEN.findall(text))
        if AUDIO_CODE_TOKEN.sub("", text).strip():
            raise ValueError(
                "audio_codes: holds something other than audio code tokens (audio_code_N); clear it to plan again"
            )
        expected = round(self.audio_duration or 0) * CODES_PER_SECOND
        if len(codes) != expected:
            raise ValueError(
                f"audio_codes: {len(codes)} codes make {len(codes) / CODES_PER_SECOND:g} s, but the duration asks for "
                f"{expected} ({round(self.audio_duration or 0)} s); set the duration to the plan's or clear the codes"
            )
        bad = [code for code in codes if code > MAX_AUDIO_CODE]
        if bad:
            raise ValueError(f"audio_codes: {bad[0]} is outside 0-{MAX_AUDIO_CODE}")
        return codes

    def pipeline_kwargs(self) -> dict[str, Any]:
        kwargs = super().pipeline_kwargs()
        if self.audio_duration is not None:  # None: the plan's length is filled in before rendering
            kwargs["audio_duration"] = float(self.audio_duration)
        if self.audio_codes.strip():
            kwargs["audio_codes"] = [self.audio_codes.strip()] * self.batch_size
        if self.instrumental:
            kwargs["lyrics"] = [INSTRUMENTAL_LYRICS] * self.batch_size
            kwargs["vocal_language"] = "unknown"
        return kwargs


@dataclass(frozen=True)
class CoverRequest(SongRequest):
    """A source song re-made in a new style, optionally with new lyrics and a timbre reference."""

    src_audio: str = ""
    reference_audio: str = ""
    audio_cover_strength: float = DEFAULT_COVER_STRENGTH
    # Official: how much of the source's latent the start keeps (0: pure noise; sampling.schedule.cover_start).
    cover_noise_strength: float = 0.0
    audio_duration: float | None = None  # None: the source's length

    mode: typing.ClassVar[str] = "cover"

    def validate(self) -> Self:
        require_audio("src_audio", self.src_audio, "upload the song to cover")
        super().validate()
        check_range("audio_cover_strength", self.audio_cover_strength, *UNIT_RANGE)
        check_range("cover_noise_strength", self.cover_noise_strength, *UNIT_RANGE)
        if self.audio_duration is not None:
            check_range("audio_duration", self.audio_duration, MIN_DURATION_S, MAX_DURATION_S, "s")
        return self

    def pipeline_kwargs(self) -> dict[str, Any]:
        return {**super().pipeline_kwargs(), "task_type": "cover", "audio_cover_strength": self.audio_cover_strength}


@dataclass(frozen=True)
class ExtendRequest(SongRequest):
    """Continue a song after its end or before its start; the seed itself stays as it was."""

    src_audio: str = ""
    extend_seconds: float = 30.0
    extend_where: str = "after"
    repaint_mode: str = DEFAULT_REPAINT_MODE
    repaint_strength: float = DEFAULT_REPAINT_STRENGTH

    mode: typing.ClassVar[str] = "extend"

    def validate(self) -> Self:
        require_audio("src_audio", self.src_audio, "upload the song to extend")
        super().validate()
        check_range("extend_seconds", self.extend_seconds, MIN_EXTEND_S, MAX_EXTEND_S, "s")
        if self.extend_where not in EXTEND_WHERE:
            raise ValueError(f"extend_where: must be 'after' or 'before', got {echo(self.extend_where)}")
        check_repaint(self.repaint_mode, self.repaint_strength)
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
    repaint_mode: str = DEFAULT_REPAINT_MODE  # repaint and lego: see ExtendRequest
    repaint_strength: float = DEFAULT_REPAINT_STRENGTH

    mode: typing.ClassVar[str] = "edit"

    def validate(self) -> Self:
        require_audio("src_audio", self.src_audio, "upload the song to edit")
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
        if self.task_type in SEGMENT_TASKS:
            check_segment(self.repainting_start, self.repainting_end)
        check_repaint(self.repaint_mode, self.repaint_strength)
        return self

    def check_source(self, source_s: float) -> None:
        if self.task_type in SEGMENT_TASKS:
            check_segment_end(self.repainting_end, source_s)

    def pipeline_kwargs(self) -> dict[str, Any]:
        kwargs = {**super().pipeline_kwargs(), "task_type": self.task_type}
        if self.task_type in SEGMENT_TASKS:
            kwargs.update(repainting_start=self.repainting_start, repainting_end=self.repainting_end)
        if self.task_type in ("extract", "lego"):
            kwargs["track_name"] = self.track_name
        if self.task_type == "complete":
            kwargs["complete_track_classes"] = list(self.complete_track_classes)
        return kwargs


@dataclass(frozen=True)
class FlowEditRequest(SongRequest):
    """Re-describe a song: ``prompt``/``lyrics`` say what it should become, ``source_*`` what it is.

    ``guidance_scale`` guides the target, ``source_guidance_scale`` the source.
    ``repainting_end`` None (or -1, the official "to the end") edits the whole song, and then
    ``repainting_start`` is 0; otherwise only ``[repainting_start, repainting_end]`` changes and
    the rest stays bit-identical. Either way the saved settings name the segment that was used.
    """

    src_audio: str = ""
    source_prompt: str = ""
    source_lyrics: str = ""
    source_guidance_scale: float = 1.0
    n_max: int | None = None  # None: N_MAX_FRACTION of num_inference_steps
    n_min: int = 0
    n_avg: int = 1
    repainting_start: float = 0.0
    repainting_end: float | None = None

    mode: typing.ClassVar[str] = "flow_edit"

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Self:
        values = dict(values)
        if values.get("repainting_end") in (-1, "-1"):
            values["repainting_end"] = None
        return super().from_values(values)

    @property
    def edit_steps(self) -> int:
        """``n_max`` as given, or the paper's fraction of the steps (at least one)."""
        if self.n_max is not None:
            return self.n_max
        return max(1, round(N_MAX_FRACTION * self.num_inference_steps))

    def validate(self) -> Self:
        require_audio("src_audio", self.src_audio, "upload the song to edit")
        if not self.prompt.strip() and not self.lyrics.strip():
            raise ValueError("prompt: describe what the song should become (style, instruments, mood) or give lyrics")
        super().validate()
        check_range("source_guidance_scale", self.source_guidance_scale, *GUIDANCE_RANGE)
        check_range("n_avg", self.n_avg, 1, MAX_N_AVG)
        if self.n_max is not None:
            check_range("n_max", self.n_max, 1, self.num_inference_steps, note="at most num_inference_steps")
        check_range("n_min", self.n_min, 0, self.edit_steps, note=f"at most n_max, {self.edit_steps}")
        check_range("repainting_start", self.repainting_start, 0.0, MAX_DURATION_S, "s")
        if self.repainting_end is None and self.repainting_start != 0:
            # The whole song is edited then: a start saved beside it would describe an edit that never happened.
            raise ValueError(
                f"repainting_start: {self.repainting_start:g} s needs a repainting_end to make a segment; "
                "set the end, or the start to 0 to edit the whole song"
            )
        if self.repainting_end is not None:
            check_segment(self.repainting_start, self.repainting_end)
        return self

    def check_source(self, source_s: float) -> None:
        if self.repainting_end is not None:
            check_segment_end(self.repainting_end, source_s)


# Every song mode, by name: the four tabs' requests and FlowEdit (on the Edit tab). Batch files,
# share links, the form and the API all look a mode up here.
REQUEST_TYPES: Mapping[str, type[SongRequest]] = types.MappingProxyType(
    {cls.mode: cls for cls in (GenerateRequest, CoverRequest, ExtendRequest, EditRequest, FlowEditRequest)}
)
