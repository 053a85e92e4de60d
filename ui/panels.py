"""The Lyrics tab and the LoRA panel: their components (built from the request types' own
defaults) and their events. ``app.py`` places them on the page and calls ``wire_lyrics_and_lora``.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from backend import Cancelled, ModelUnavailableError, RunControl
from lm.lyrics_fit import fit_line
from lora.presets import fetch_preset, load_presets
from lyrics_lm import (
    MAX_LINES_PER_SECTION,
    MAX_NEW_TOKENS,
    MIN_LINES_PER_SECTION,
    MIN_NEW_TOKENS,
    RHYME_SCHEMES,
    STRUCTURE_PRESETS,
    LyricsRequest,
)
from serving.env import on_zerogpu
from serving.zerogpu import write_lyrics_on_zerogpu
from studio import Studio
from tooltips import TOOLTIPS
from ui.controls import pass_through
from ui.runs import GPU_EVENT_TIME_LIMIT_S, RUN_OPTIONS, ActiveRuns, ProgressRelay, session_key
from validation import (
    LANGUAGE_NAMES,
    MAX_LORA_WEIGHT,
    MIN_TOP_P_SLIDER,
    TEMPERATURE_RANGE,
    TOP_P_RANGE,
    VOCAL_LANGUAGES,
    safe_message,
)

CUSTOM_STRUCTURE = "Custom"
LORA_FILE_CONCURRENCY_ID = "lora_file"
LORA_FILE_CONCURRENCY = 2  # files checked at once; each check is bounded by lora_check's limits


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
            *TEMPERATURE_RANGE,
            value=defaults.temperature,
            step=0.05,
            label="Temperature",
            info=TOOLTIPS["lyrics_temperature"],
        )
        inputs["top_p"] = gr.Slider(
            MIN_TOP_P_SLIDER,
            TOP_P_RANGE[1],
            value=defaults.top_p,
            step=0.01,
            label="Top-p",
            info=TOOLTIPS["lyrics_top_p"],
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
    for component in inputs.values():
        pass_through(component)  # LyricsRequest.from_values words a bad value, naming its field
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


LYRICS_API_DOC = """Write song lyrics ACE-Step can sing, with section tags, streamed as they are written.

Args:
    brief: What the song is about: its story, mood or theme.
    language: The language to write in (a code ACE-Step sings, e.g. en, es, ja).
    structure: Section names in order, comma-separated (intro, verse, pre-chorus, chorus, bridge, outro).
    tone: How it should feel (optional).
    lines_per_section: About how many lines each sung section gets (1-16).
    rhyme_scheme: One letter per line (ABAB, AABB, ABCB...) or free.
    temperature: Higher writes more surprising lines (0-2).
    top_p: Nucleus sampling (above 0, at most 1).
    max_new_tokens: The longest reply (64-2048 tokens).
    seed: The same seed and settings write the same lyrics; -1 picks a random one.

Returns:
    The lyrics so far (the last message holds them all) and a note with the seed and model.
"""


def wire_lyrics_and_lora(
    studio: Studio,
    runs: ActiveRuns,
    *,
    lyrics_tab: LyricsTab,
    lora_panel: LoraPanel,
    generate: dict[str, gr.components.Component],
    advanced: dict[str, gr.components.Component],
    mode_nav: gr.Radio,
    write_for_me: gr.Button,
    idea: gr.Textbox,
    idea_event: Any,
    cancel_handler: Callable[..., str],
) -> None:
    """The events of the Lyrics tab, "Write lyrics for me", the idea's lyrics and the LoRA panel."""
    run_options = RUN_OPTIONS

    # ---- the lyrics writer: its tab, "Write lyrics for me" on Generate, and the idea's lyrics
    def stream_lyrics(values: dict[str, Any], progress: gr.Progress, request: gr.Request | None):
        """The growing text and a note (seed, model); keeps what was written when stopped."""
        if studio.lyrics is None:
            raise gr.Error("This studio was started without a lyrics writer (--lyrics-model none).")
        try:
            lyrics_request = LyricsRequest.from_values(values).validate().resolve_seed()
        except ValueError as error:
            raise gr.Error(safe_message(str(error)), title="Check the lyrics settings") from error
        note = f"Seed {lyrics_request.seed} · {html.escape(Path(studio.lyrics.model).name)}"
        control = RunControl(ProgressRelay(progress))
        session = session_key(request)
        runs.start(session, control)
        try:
            texts = (
                write_lyrics_on_zerogpu(lyrics_request, ProgressRelay(progress))
                if on_zerogpu()
                else studio.lyrics.write(lyrics_request, control)
            )
            for text in texts:
                yield text, note
        except Cancelled:
            gr.Info("Stopped: the lines written so far are kept.")
        except ModelUnavailableError as error:
            raise gr.Error(safe_message(str(error)), title="Lyrics model unavailable", duration=None) from error
        except ValueError as error:
            raise gr.Error(safe_message(str(error)), title="Could not write lyrics") from error
        finally:
            runs.finish(session, control)

    def lyrics_handler(
        progress: gr.Progress = gr.Progress(), request: gr.Request = None, **values: Any
    ) -> Iterator[tuple[str, str]]:
        yield from stream_lyrics(values, progress, request)

    lyrics_handler.__doc__ = LYRICS_API_DOC
    lyrics_options = dict(concurrency_id="lyrics", concurrency_limit=1, time_limit=GPU_EVENT_TIME_LIMIT_S)
    lyrics_tab.write.click(
        lyrics_handler,
        inputs_kwargs=lyrics_tab.inputs,
        outputs=[lyrics_tab.text, lyrics_tab.note],
        api_name="lyrics",
        **lyrics_options,
    )
    lyrics_tab.stop.click(cancel_handler, outputs=lyrics_tab.note, queue=False, api_visibility="private")
    lyrics_tab.preset.change(
        structure_of,
        inputs=[lyrics_tab.preset, lyrics_tab.inputs["structure"]],
        outputs=lyrics_tab.inputs["structure"],
        api_visibility="private",
        queue=False,
    )
    gr.on(
        [lyrics_tab.text.change, generate["audio_duration"].change],
        lambda text, duration, language: fit_line(
            "generate", {"lyrics": text, "audio_duration": duration, "vocal_language": language}
        ),
        inputs=[lyrics_tab.text, generate["audio_duration"], lyrics_tab.inputs["language"]],
        outputs=lyrics_tab.meter,
        api_visibility="private",
        queue=False,
        show_progress="hidden",
    )
    lyrics_tab.use.click(
        lambda text, language: (text, language, "generate"),
        inputs=[lyrics_tab.text, lyrics_tab.inputs["language"]],
        outputs=[generate["lyrics"], generate["vocal_language"], mode_nav],
        api_visibility="private",
        queue=False,
    )

    def lyrics_for_generate(
        brief: str, language: str, progress: gr.Progress = gr.Progress(), request: gr.Request = None
    ) -> Iterator[str]:
        if not (brief or "").strip():
            raise gr.Error("Describe the song in Style first: it is the brief the writer works from.")
        for text, _ in stream_lyrics({"brief": brief, "language": language}, progress, request):
            yield text

    write_for_me.click(
        lyrics_for_generate,
        inputs=[generate["prompt"], generate["vocal_language"]],
        outputs=generate["lyrics"],
        api_visibility="private",
        **lyrics_options,
    )
    if studio.lyrics is not None:
        idea_event.success(
            lyrics_for_generate,
            inputs=[idea, generate["vocal_language"]],
            outputs=generate["lyrics"],
            api_visibility="private",
            **lyrics_options,
        )

    # ---- the LoRA panel: pick, add a file, fetch a preset; the stack itself is the "loras" field
    def lora_choices(selected: str | None = None) -> gr.Dropdown:
        try:
            entries = studio.known_loras()
        except ModelUnavailableError as error:
            raise gr.Error(str(error), title="Model unavailable") from error
        return gr.Dropdown(
            choices=[(f"{entry.name} · {entry.sha256[:8]}", entry.sha256[:16]) for entry in entries],
            value=selected,
        )

    lora_panel.refresh.click(lora_choices, outputs=lora_panel.pick, api_visibility="private", **run_options)

    def add_to_stack(stack: str, key: str | None, weight: float) -> str:
        try:
            return with_lora(stack, key, weight)
        except ValueError as error:
            raise gr.Error(str(error)) from error

    lora_panel.add_to_stack.click(
        add_to_stack,
        inputs=[advanced["loras"], lora_panel.pick, lora_panel.weight],
        outputs=advanced["loras"],
        api_visibility="private",
        queue=False,
    )

    def add_lora_file(path: str | None, name: str) -> tuple:
        # A plain function: Gradio runs it in its thread pool, so checking a file never blocks
        # the event loop; the file is checked before the run lock is taken (Studio.add_lora).
        if not path:
            raise gr.Error("Choose a .safetensors file first.")
        try:
            entry = studio.add_lora(path, name=name.strip() or None)
        except (ValueError, ModelUnavailableError) as error:
            raise gr.Error(str(error), title="LoRA refused") from error
        note = f"Added **{html.escape(entry.name)}** (rank {entry.info.rank}, {entry.info.modules} layers)."
        return lora_choices(entry.sha256[:16]), note

    lora_panel.add_file.click(
        add_lora_file,
        inputs=[lora_panel.upload, lora_panel.name],
        outputs=[lora_panel.pick, lora_panel.note],
        api_visibility="private",
        # Not the GPU slot: an upload being checked must not queue behind a song, nor a song behind it.
        concurrency_id=LORA_FILE_CONCURRENCY_ID,
        concurrency_limit=LORA_FILE_CONCURRENCY,
        time_limit=GPU_EVENT_TIME_LIMIT_S,  # loading the adapter waits for the run in progress
    )

    def fetch_lora_preset(name: str | None, progress: gr.Progress = gr.Progress()) -> tuple:
        if not name:
            raise gr.Error("Pick a preset first.")
        try:
            preset = next(preset for preset in load_presets() if preset.name == name)
            path = fetch_preset(name, ProgressRelay(progress))
            entry = studio.add_lora(path, name=preset.name, trigger_words=preset.trigger_words)
        except (ValueError, ModelUnavailableError, StopIteration) as error:
            raise gr.Error(str(error), title="Could not add the preset") from error
        note = f"Added **{html.escape(entry.name)}**; suggested weight {preset.weight:g}."
        return lora_choices(entry.sha256[:16]), note

    lora_panel.fetch.click(
        fetch_lora_preset,
        inputs=lora_panel.preset,
        outputs=[lora_panel.pick, lora_panel.note],
        api_visibility="private",
        **run_options,
    )
