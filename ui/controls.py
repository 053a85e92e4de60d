"""The table of form controls, and the builder that turns it into Gradio components.

Each row names a request field (the pipeline's own name); its default comes from the
request dataclass, its help from ``tooltips.py``. Events bind the built components by
these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import gradio as gr

from modes import REQUEST_TYPES, SongRequest
from theme import EMPTY_NUMBER_CLASS
from tooltips import TOOLTIPS
from validation import (
    FORM_KEYSCALES,
    GUIDANCE_RANGE,
    LANGUAGE_NAMES,
    LM_GUIDANCE_RANGE,
    MAX_BATCH,
    MAX_DURATION_S,
    MAX_EXTEND_S,
    MAX_FADE_S,
    MAX_N_AVG,
    MAX_SHIFT,
    MAX_STEPS,
    MIN_DURATION_S,
    MIN_EXTEND_S,
    MIN_SHIFT,
    MIN_STEPS,
    MIN_TOP_P_SLIDER,
    MP3_BITRATES_KBPS,
    REPAINT_MODES,
    TARGET_LUFS_RANGE,
    TEMPERATURE_RANGE,
    TIME_SIGNATURES,
    TOP_P_RANGE,
    TRACK_NAMES,
    TRUE_PEAK_RANGE_DBTP,
    UNIT_RANGE,
    VOCAL_LANGUAGES,
    figure,
    optional_fields,
)

Panel = Literal["main", "advanced", "output", "planner", "flow", "lora"]


ALL_MODES = ("generate", "cover", "extend", "edit")
REWORK_MODES = ("cover", "extend", "edit")


@dataclass(frozen=True)
class Control:
    name: str  # a request field
    widget: Literal["textbox", "range", "number", "dropdown", "multiselect", "checkbox", "audio", "image"]
    label: str
    panel: Panel
    modes: tuple[str, ...] = ALL_MODES  # the tabs whose main panel shows it (advanced: all)
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] = ()
    lines: int = 1
    placeholder: str = ""
    base_only: bool = False  # shown only when a base checkpoint is loaded


CONTROLS: tuple[Control, ...] = (
    Control("src_audio", "audio", "Source song", "main", REWORK_MODES),
    Control(
        "prompt", "textbox", "Style", "main", lines=3,
        placeholder="e.g. dreamy synth-pop, female vocals, 110 bpm, warm analog pads",
    ),
    Control("lyrics", "textbox", "Lyrics", "main", lines=10, placeholder="[verse]\n…\n\n[chorus]\n…"),
    Control("instrumental", "checkbox", "Instrumental", "main", ("generate",)),
    Control("think", "checkbox", "Think (plan with the 5 Hz LM)", "main", ("generate",)),
    # A number, not a slider: a slider's box clamps 5000 to 600 silently; the request refuses it with the range.
    Control(
        "audio_duration",
        "number",
        f"Duration (s, {MIN_DURATION_S}-{MAX_DURATION_S}; empty: the planner's choice)",
        "main",
        ("generate",),
    ),
    Control("audio_duration", "number", "Duration (s, empty = the source's)", "main", ("cover",)),
    Control("audio_cover_strength", "range", "Cover strength", "main", ("cover",), *UNIT_RANGE, 0.01),
    Control("cover_noise_strength", "range", "Start from the source", "main", ("cover",), *UNIT_RANGE, 0.01),
    Control("reference_audio", "audio", "Timbre reference (optional)", "main", ("generate", "cover")),
    Control("extend_seconds", "range", "Seconds to add", "main", ("extend",), MIN_EXTEND_S, MAX_EXTEND_S, 1),
    Control(
        "extend_where", "dropdown", "Where", "main", ("extend",),
        choices=(("After the end", "after"), ("Before the start", "before")),
    ),
    Control(
        "task_type", "dropdown", "Task", "main", ("edit",), base_only=True,
        choices=(
            ("Re-make the segment", "repaint"), ("Extract a track", "extract"),
            ("Add a track over the segment", "lego"), ("Complete with more tracks", "complete"),
        ),
    ),
    Control(
        "repaint_mode", "dropdown", "Keep the source around it", "main", ("extend", "edit"),
        choices=tuple((mode.capitalize(), mode) for mode in REPAINT_MODES),
    ),
    Control("repaint_strength", "range", "Repaint strength", "main", ("extend", "edit"), *UNIT_RANGE, 0.05),
    Control("repainting_start", "number", "Segment start (s)", "main", ("edit",)),
    Control("repainting_end", "number", "Segment end (s)", "main", ("edit",)),
    Control(
        "track_name", "dropdown", "Track", "main", ("edit",), base_only=True,
        choices=(("None", ""), *((name.replace("_", " "), name) for name in TRACK_NAMES)),
    ),
    Control(
        "complete_track_classes", "multiselect", "Tracks to add", "main", ("edit",), base_only=True,
        choices=tuple((name.replace("_", " "), name) for name in TRACK_NAMES),
    ),
    Control(
        "vocal_language", "dropdown", "Vocal language", "main",
        choices=tuple((LANGUAGE_NAMES.get(code, code), code) for code in VOCAL_LANGUAGES),
    ),
    Control("num_inference_steps", "range", "Steps", "advanced", minimum=MIN_STEPS, maximum=MAX_STEPS, step=1),
    Control("guidance_scale", "range", "Guidance", "advanced", ALL_MODES, *GUIDANCE_RANGE, 0.1),
    Control("shift", "range", "Shift", "advanced", minimum=MIN_SHIFT, maximum=MAX_SHIFT, step=0.1),
    Control("seed", "number", "Seed (-1 = random)", "advanced"),
    Control("batch_size", "range", "Takes", "advanced", minimum=1, maximum=MAX_BATCH, step=1),
    Control("bpm", "number", "BPM (empty = the model chooses)", "advanced"),
    Control("keyscale", "dropdown", "Key", "advanced", choices=(("Auto", ""), *((k, k) for k in FORM_KEYSCALES))),
    Control(
        "timesignature", "dropdown", "Time signature", "advanced",
        choices=(("Auto", ""), *((f"{t} beats per bar", t) for t in TIME_SIGNATURES)),
    ),
    Control("cfg_interval_end", "range", "Guide from t (early end)", "advanced", ALL_MODES, *UNIT_RANGE, 0.01),
    Control("cfg_interval_start", "range", "Guide down to t (late end)", "advanced", ALL_MODES, *UNIT_RANGE, 0.01),
    Control("guidance_method", "dropdown", "Guidance method", "advanced", choices=(("APG", "apg"), ("ADG", "adg"))),
    Control(
        "infer_method", "dropdown", "Sampler", "advanced",
        choices=(("ODE (Euler)", "ode"), ("SDE (stochastic)", "sde")),
    ),
    Control("dcw_enabled", "checkbox", "DCW (wavelet latent correction)", "advanced"),
    Control("lm_rewrite_caption", "checkbox", "Let the planner rewrite the caption", "planner", ("generate",)),
    Control("lm_temperature", "range", "Planner temperature", "planner", ("generate",), *TEMPERATURE_RANGE, 0.05),
    Control("lm_top_p", "range", "Planner top-p", "planner", ("generate",), MIN_TOP_P_SLIDER, TOP_P_RANGE[1], 0.01),
    Control("lm_top_k", "number", "Planner top-k (0 = off)", "planner", ("generate",)),
    Control("lm_guidance_scale", "range", "Planner guidance", "planner", ("generate",), *LM_GUIDANCE_RANGE, 0.1),
    Control("lm_negative_prompt", "textbox", "Planner negative prompt", "planner", ("generate",)),
    Control(
        "audio_codes", "textbox", "Plan to replay (audio codes)", "planner", ("generate",), lines=2,
        placeholder="empty: plan anew when Think is on",
    ),
    Control("source_prompt", "textbox", "Style now", "flow", ("flow_edit",), lines=2),
    Control("source_lyrics", "textbox", "Lyrics now", "flow", ("flow_edit",), lines=6),
    Control("source_guidance_scale", "range", "Guidance (source)", "flow", ("flow_edit",), *GUIDANCE_RANGE, 0.1),
    Control("n_max", "number", "Edit steps (empty = 2/3 of the steps)", "flow", ("flow_edit",)),
    Control("n_min", "number", "Plain steps at the end", "flow", ("flow_edit",)),
    Control("n_avg", "range", "Noise samples per step", "flow", ("flow_edit",), 1, MAX_N_AVG, 1),
    Control("loras", "textbox", "LoRA stack", "lora", placeholder="empty: no LoRA"),
    Control("lora_triggers", "checkbox", "Add trigger words to the style", "lora"),
    Control("master", "checkbox", "Master the result", "output"),
    Control(
        "target_lufs", "range", "Mastering loudness (LUFS)", "output",
        minimum=TARGET_LUFS_RANGE[0], maximum=TARGET_LUFS_RANGE[1], step=0.5,
    ),
    Control(
        "true_peak_dbtp", "range", "Mastering ceiling (dBTP)", "output",
        minimum=TRUE_PEAK_RANGE_DBTP[0], maximum=TRUE_PEAK_RANGE_DBTP[1], step=0.1,
    ),
    Control("fade_in_s", "range", "Fade in (s)", "output", minimum=0, maximum=MAX_FADE_S, step=0.1),
    Control("fade_out_s", "range", "Fade out (s)", "output", minimum=0, maximum=MAX_FADE_S, step=0.1),
    Control("trim_silence", "checkbox", "Trim silence at the ends", "output"),
    Control(
        "wav_bit_depth", "dropdown", "WAV", "output",
        choices=(("16-bit", "16"), ("24-bit", "24"), ("32-bit float", "32f")),
    ),
    Control(
        "mp3_bitrate_kbps", "dropdown", "MP3 bitrate", "output",
        choices=tuple((f"{rate} kbps", rate) for rate in MP3_BITRATES_KBPS),
    ),
    Control("opus", "checkbox", "Also export Opus", "output"),
    Control("cover_image", "image", "Cover art (PNG or JPEG)", "output"),
)  # fmt: skip


def pass_through(component: gr.components.Component) -> gr.components.Component:
    """Turn off Gradio's own conversion of this input.

    The raw value reaches the handler, where the request dataclass validates it and
    names the field in its message; Gradio's check would fail with a generic error
    (an API client sending bpm="fast" would learn nothing). An instance attribute,
    because subclassing a component makes Gradio write a .pyi stub beside this file.
    """
    component.preprocess = lambda payload: payload
    return component


NOT_UPLOADED = {"not": "an uploaded file"}  # what a file input hands on when a client sent no file


class _FileOrRefusal:
    """A file input's data model that lets a value which is no uploaded file through as
    ``NOT_UPLOADED``, so that the request's validation names the field ("src_audio: not an
    uploaded file") instead of Gradio failing with no words. Everything else is the model's own."""

    def __init__(self, model: Any) -> None:
        self._model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def model_validate(self, value: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._model.model_validate(value, *args, **kwargs)
        except ValueError:  # pydantic's ValidationError is a ValueError
            return NOT_UPLOADED


def file_input(component: gr.components.Component) -> gr.components.Component:
    """A file input that refuses a plain string (a server path, a name) in words.

    Gradio checks a file input's value against its data model before any handler runs, so a
    client that sends ``src_audio="/etc/passwd"`` learns nothing but "an exception". The path
    is never opened either way: an uploaded file must lie in Gradio's upload folder.
    """
    convert = component.preprocess
    component.data_model = _FileOrRefusal(component.data_model)
    component.preprocess = lambda payload: NOT_UPLOADED if payload is NOT_UPLOADED else convert(payload)
    return component


# Number boxes whose field may be unset: a request reads their 0 as unset (``from_values``), so
# the page shows them empty, never 0 (theme.THEME_HEAD: Gradio's box shows 0 for an empty value
# each time it mounts, as a hidden tab's does when the tab is shown).
OPTIONAL_NUMBERS = frozenset(
    c.name
    for c in CONTROLS
    if c.widget == "number" and any(c.name in optional_fields(t) for t in REQUEST_TYPES.values())
)

_WIDGETS: dict[str, type] = {
    "textbox": gr.Textbox,
    "number": gr.Number,
    "dropdown": gr.Dropdown,
    "multiselect": gr.Dropdown,
    "checkbox": gr.Checkbox,
}


def range_label(label: str, minimum: float, maximum: float) -> str:
    """``label`` with the range it takes: "Steps (1-200)", "Fade in (s, 0-30)", "Mastering ceiling (dBTP, -6 to 0)"."""
    low, high = figure(minimum), figure(maximum)
    span = f"{low}-{high}" if minimum >= 0 else f"{low} to {high}"
    return f"{label[:-1]}, {span})" if label.endswith(")") else f"{label} ({span})"


def range_number(minimum: float, maximum: float, step: float, label: str, **kwargs: Any) -> gr.Number:
    """A number box with its range in its label, where a slider would be.

    Gradio's slider clamps a typed number to its range (5000 steps became 200 without a word) and,
    on the server, refuses one with its own words before any handler runs. This box has no
    minimum or maximum of its own, so what the user typed reaches the request, which refuses it
    naming the range (``validation.check_range``); ``step`` is what its arrows add.
    """
    return gr.Number(label=range_label(label, minimum, maximum), step=step, precision=None, **kwargs)


def build_control(control: Control, value: Any, elem_id: str, visible: bool = True) -> gr.components.Component:
    if control.widget == "image":
        # A file, not gr.Image: the image is embedded byte for byte, never re-encoded.
        image = gr.File(label=control.label, file_types=[".png", ".jpg", ".jpeg"], type="filepath", elem_id=elem_id)
        file_input(image)
        gr.Markdown(TOOLTIPS.get(control.name, ""), elem_classes="control-help")
        return image
    if control.widget == "audio":
        # Audio keeps Gradio's conversion (it turns the upload into a file path) and has
        # no ``info``, so its help goes in a line of text under it.
        audio = file_input(gr.Audio(type="filepath", sources=["upload"], label=control.label, elem_id=elem_id))
        gr.Markdown(TOOLTIPS.get(control.name, ""), elem_classes="control-help")
        return audio
    kwargs: dict[str, Any] = dict(value=value, label=control.label, info=TOOLTIPS.get(control.name), elem_id=elem_id)
    if control.widget == "textbox":
        kwargs.update(lines=control.lines, placeholder=control.placeholder)
    elif control.widget == "range":
        return pass_through(range_number(control.minimum, control.maximum, control.step, visible=visible, **kwargs))
    elif control.widget == "number":
        kwargs.update(precision=None if control.name.startswith("repainting") else 0)
        if control.name in OPTIONAL_NUMBERS:
            kwargs["elem_classes"] = EMPTY_NUMBER_CLASS
    elif control.widget in ("dropdown", "multiselect"):
        kwargs.update(choices=list(control.choices), multiselect=control.widget == "multiselect")
        if control.name in ("keyscale", "timesignature"):
            # Typed spellings ("Am", "F♯ minor", "6/8") are read into the official ones by the request.
            kwargs["allow_custom_value"] = True
        if control.widget == "multiselect":
            kwargs["value"] = list(value)
    return pass_through(_WIDGETS[control.widget](visible=visible, **kwargs))


def build_main_panel(mode: str, defaults: SongRequest, base: bool = False) -> dict[str, gr.components.Component]:
    """The controls of one mode's tab, in table order, valued from ``defaults``.

    Base-only controls are built hidden on other checkpoints (they stay API inputs),
    with a line saying how to get them.
    """
    controls = [c for c in CONTROLS if c.panel == "main" and mode in c.modes]
    panel = {
        c.name: build_control(c, getattr(defaults, c.name), elem_id=f"{mode}-{c.name}", visible=base or not c.base_only)
        for c in controls
    }
    if not base and any(c.base_only for c in controls):
        gr.Markdown(BASE_ONLY_HINT, elem_classes="control-help")
    return panel


BASE_ONLY_HINT = (
    "Extracting a track, adding one or completing a lone track needs a base checkpoint: "
    "start the studio with `--model xl-base` (or `base`)."
)


def build_panel(panel: Panel, mode: str, defaults: SongRequest) -> dict[str, gr.components.Component]:
    """One mode's controls of ``panel`` (e.g. the planner's), in table order, valued from ``defaults``;
    controls naming fields ``defaults`` lacks are left out."""
    return {
        c.name: build_control(c, getattr(defaults, c.name), elem_id=f"{mode}-{c.name}")
        for c in CONTROLS
        if c.panel == panel and mode in c.modes and hasattr(defaults, c.name)
    }


def build_shared_panel(defaults: SongRequest, panel: Panel) -> dict[str, gr.components.Component]:
    """Controls every song mode shares (the sampler, finishing and export); built once."""
    return {c.name: build_control(c, getattr(defaults, c.name), elem_id=c.name) for c in CONTROLS if c.panel == panel}
