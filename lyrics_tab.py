"""The Lyrics tab's form and the LoRA panel: built from the request types' own defaults.

``app.py`` places them and wires their events; this module only builds components, so the
page's layout code stays in one place and each panel's controls live beside their defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from controls import LANGUAGE_NAMES
from lyrics_lm import (
    MAX_LINES_PER_SECTION,
    MAX_NEW_TOKENS,
    MIN_LINES_PER_SECTION,
    MIN_NEW_TOKENS,
    RHYME_SCHEMES,
    STRUCTURE_PRESETS,
    LyricsRequest,
)
from modes import MAX_LORA_WEIGHT, VOCAL_LANGUAGES
from tooltips import TOOLTIPS

CUSTOM_STRUCTURE = "Custom"


@dataclass
class LyricsTab:
    inputs: dict[str, gr.components.Component]  # LyricsRequest fields by name
    preset: gr.Dropdown
    write: gr.Button
    stop: gr.Button
    text: gr.Textbox
    note: gr.Markdown
    meter: gr.Markdown
    use: gr.Button


def build_lyrics_tab(available: bool) -> LyricsTab:
    """The Lyrics tab: brief, language, structure, tone, lines and rhyme, sampling under Advanced."""
    defaults = LyricsRequest()
    if not available:
        gr.Markdown(
            "The lyrics writer is off in this studio (started with `--lyrics-model none`).",
            elem_classes="control-help",
        )
    inputs: dict[str, Any] = {}
    inputs["brief"] = gr.Textbox(
        label="What is the song about?",
        lines=3,
        placeholder="a melancholic bossa nova about leaving Lisbon at dawn",
        info=TOOLTIPS["lyrics_brief"],
        elem_id="lyrics-brief",
    )
    with gr.Row():
        inputs["language"] = gr.Dropdown(
            choices=[(LANGUAGE_NAMES.get(code, code), code) for code in VOCAL_LANGUAGES],
            value=defaults.language,
            label="Language",
            info=TOOLTIPS["lyrics_language"],
            min_width=200,
        )
        preset = gr.Dropdown(
            choices=[*STRUCTURE_PRESETS, CUSTOM_STRUCTURE],
            value=next(name for name, value in STRUCTURE_PRESETS.items() if value == defaults.structure),
            label="Structure",
            info=TOOLTIPS["lyrics_preset"],
            min_width=200,
        )
    inputs["structure"] = gr.Textbox(
        value=defaults.structure, label="Sections, in order", info=TOOLTIPS["lyrics_structure"]
    )
    inputs["tone"] = gr.Textbox(
        value=defaults.tone, label="Tone (optional)", placeholder="bittersweet, hopeful", info=TOOLTIPS["lyrics_tone"]
    )
    with gr.Row():
        inputs["lines_per_section"] = gr.Slider(
            MIN_LINES_PER_SECTION,
            MAX_LINES_PER_SECTION,
            value=defaults.lines_per_section,
            step=1,
            label="Lines per section",
            info=TOOLTIPS["lyrics_lines_per_section"],
            min_width=240,
        )
        inputs["rhyme_scheme"] = gr.Dropdown(
            choices=list(RHYME_SCHEMES),
            value=defaults.rhyme_scheme,
            allow_custom_value=True,
            label="Rhyme scheme",
            info=TOOLTIPS["lyrics_rhyme_scheme"],
            min_width=200,
        )
    with gr.Accordion("Advanced", open=False):
        inputs["temperature"] = gr.Slider(
            0, 2, value=defaults.temperature, step=0.05, label="Temperature", info=TOOLTIPS["lyrics_temperature"]
        )
        inputs["top_p"] = gr.Slider(
            0.05, 1, value=defaults.top_p, step=0.01, label="Top-p", info=TOOLTIPS["lyrics_top_p"]
        )
        inputs["max_new_tokens"] = gr.Slider(
            MIN_NEW_TOKENS,
            MAX_NEW_TOKENS,
            value=defaults.max_new_tokens,
            step=16,
            label="Longest reply (tokens)",
            info=TOOLTIPS["lyrics_max_new_tokens"],
        )
        inputs["seed"] = gr.Number(value=defaults.seed, precision=0, label="Seed (-1 = random)", info=TOOLTIPS["seed"])
    with gr.Row(elem_classes="studio-actions"):
        write = gr.Button("Write lyrics", variant="primary", interactive=available, elem_id="lyrics-write")
        stop = gr.Button("Stop", variant="stop")
    text = gr.Textbox(label="Lyrics", lines=16, buttons=["copy"], elem_id="lyrics-text")
    note = gr.Markdown("", elem_classes="control-help")
    meter = gr.Markdown("", elem_classes="fit-meter")
    use = gr.Button("Use in Generate", elem_id="lyrics-use")
    return LyricsTab(inputs, preset, write, stop, text, note, meter, use)


def structure_of(preset: str, current: str) -> str:
    """The structure text for a chosen preset (Custom keeps what is typed)."""
    return STRUCTURE_PRESETS.get(preset, current)


@dataclass
class LoraPanel:
    pick: gr.Dropdown
    weight: gr.Slider
    add_to_stack: gr.Button
    refresh: gr.Button
    upload: gr.File
    name: gr.Textbox
    add_file: gr.Button
    preset: gr.Dropdown
    fetch: gr.Button
    note: gr.Markdown


def build_lora_panel(preset_names: list[str]) -> LoraPanel:
    """The helpers around the ``loras`` field: pick a known LoRA, add a file, fetch a preset."""
    with gr.Row():
        pick = gr.Dropdown(choices=[], label="Your LoRAs", info=TOOLTIPS["lora_pick"], scale=3, min_width=220)
        weight = gr.Slider(0, MAX_LORA_WEIGHT, value=1.0, step=0.05, label="Weight", scale=2, min_width=220)
    with gr.Row():
        add_to_stack = gr.Button("Add to the stack", variant="secondary")
        refresh = gr.Button("Show my LoRAs", variant="secondary")
    upload = gr.File(label="Add a LoRA file (.safetensors only)", file_types=[".safetensors"], type="filepath")
    with gr.Row():
        name = gr.Textbox(label="Its name (optional)", scale=3)
        add_file = gr.Button("Check and add", scale=1)
    with gr.Row():
        preset = gr.Dropdown(choices=preset_names, value=None, label="Presets", info=TOOLTIPS["lora_preset"], scale=3)
        fetch = gr.Button("Download", scale=1)
    note = gr.Markdown("", elem_classes="control-help")
    return LoraPanel(pick, weight, add_to_stack, refresh, upload, name, add_file, preset, fetch, note)


def with_lora(stack: str, key: str | None, weight: float) -> str:
    """``stack`` with ``key`` at ``weight`` (replacing its earlier weight, else appended)."""
    if not key:
        raise ValueError("Pick one of your LoRAs first (Show my LoRAs lists them).")
    items = [item.strip() for item in (stack or "").split(",") if item.strip()]
    items = [item for item in items if item.rpartition(":")[0].strip() != key and item != key]
    return ", ".join([*items, f"{key}:{weight:g}"])
