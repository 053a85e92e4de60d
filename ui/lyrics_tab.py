"""The Lyrics tab: its components (built from ``LyricsRequest``'s own defaults) and its events,
with "Write lyrics for me" on Generate. The writer runs through the one run guard
(``ui.runs.guarded_stream``), on its ZeroGPU entry point on a Space.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from lm.lyrics_fit import fit_line
from lyrics_lm import (
    MAX_LINES_PER_SECTION,
    MAX_NEW_TOKENS,
    MIN_LINES_PER_SECTION,
    MIN_NEW_TOKENS,
    RHYME_SCHEMES,
    STRUCTURE_PRESETS,
    LyricsRequest,
)
from serving.zerogpu import write_lyrics_on_zerogpu
from studio import Studio
from tooltips import TOOLTIPS
from ui.controls import pass_through, range_number
from ui.runs import (
    GPU_EVENT_TIME_LIMIT_S,
    LYRICS_LANE,
    ActiveRuns,
    Canceller,
    Job,
    ProgressRelay,
    Words,
    guarded_stream,
    session_key,
)
from ui.words import in_words
from validation import LANGUAGE_NAMES, MIN_TOP_P_SLIDER, TEMPERATURE_RANGE, TOP_P_RANGE, VOCAL_LANGUAGES, safe_message

if TYPE_CHECKING:
    from ui.page import Page

CUSTOM_STRUCTURE = "Custom"
LYRICS_OPTIONS: dict[str, Any] = dict(concurrency_id="lyrics", concurrency_limit=1, time_limit=GPU_EVENT_TIME_LIMIT_S)
LYRICS_WORDS = Words(
    failed="Could not write lyrics",
    unavailable="Lyrics model unavailable",
    crashed="Writing the lyrics failed",
    stopped="Stopped: the lines written so far are kept.",
)


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
        inputs["lines_per_section"] = range_number(
            MIN_LINES_PER_SECTION,
            MAX_LINES_PER_SECTION,
            1,
            value=defaults.lines_per_section,
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
    inputs |= _sampling_inputs(defaults)
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


def _sampling_inputs(defaults: LyricsRequest) -> dict[str, Any]:
    """The writer's sampling, under Advanced."""
    inputs: dict[str, Any] = {}
    with gr.Accordion("Advanced", open=False):
        inputs["temperature"] = range_number(
            *TEMPERATURE_RANGE,
            0.05,
            value=defaults.temperature,
            label="Temperature",
            info=TOOLTIPS["lyrics_temperature"],
        )
        inputs["top_p"] = range_number(
            MIN_TOP_P_SLIDER,
            TOP_P_RANGE[1],
            0.01,
            value=defaults.top_p,
            label="Top-p",
            info=TOOLTIPS["lyrics_top_p"],
        )
        inputs["max_new_tokens"] = range_number(
            MIN_NEW_TOKENS,
            MAX_NEW_TOKENS,
            16,
            value=defaults.max_new_tokens,
            label="Longest reply (tokens)",
            info=TOOLTIPS["lyrics_max_new_tokens"],
        )
        inputs["seed"] = gr.Number(value=defaults.seed, precision=0, label="Seed (-1 = random)", info=TOOLTIPS["seed"])
    return inputs


def structure_of(preset: str, current: str) -> str:
    """The structure text for a chosen preset (Custom keeps what is typed)."""
    return STRUCTURE_PRESETS.get(preset, current)


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


class LyricsWriter:
    """The lyrics writer's handlers: the Lyrics tab's ``lyrics`` endpoint, and the lyrics that
    "Write lyrics for me" and the idea put on Generate."""

    def __init__(self, studio: Studio, runs: ActiveRuns) -> None:
        self.studio = studio
        self.runs = runs

    def stream(
        self, values: dict[str, Any], progress: gr.Progress, request: gr.Request | None
    ) -> Iterator[tuple[str, str]]:
        """The growing text and a note (seed, model); keeps what was written when stopped."""
        writer = self.studio.lyrics
        if writer is None:
            raise gr.Error("This studio was started without a lyrics writer (--lyrics-model none).")
        try:
            lyrics_request = LyricsRequest.from_values(values).validate().resolve_seed()
        except ValueError as error:
            raise gr.Error(safe_message(str(error)), title="Check the lyrics settings") from error
        note = f"Seed {lyrics_request.seed} · {html.escape(Path(writer.model).name)}"
        relay = ProgressRelay(progress)
        job = Job(
            lambda control: writer.write(lyrics_request, control),
            lambda: write_lyrics_on_zerogpu(lyrics_request, relay),
            words=LYRICS_WORDS,
            lane=LYRICS_LANE,
        )
        for text in guarded_stream(self.runs, session_key(request), relay, job):
            yield text, note

    def lyrics_handler(
        self, progress: gr.Progress = gr.Progress(), request: gr.Request = None, **values: Any
    ) -> Iterator[tuple[str, str]]:
        yield from self.stream(values, progress, request)

    def lyrics_for_generate(
        self, brief: str, language: str, progress: gr.Progress = gr.Progress(), request: gr.Request = None
    ) -> Iterator[str]:
        if not (brief or "").strip():
            raise gr.Error("Describe the song in Style first: it is the brief the writer works from.")
        for text, _ in self.stream({"brief": brief, "language": language}, progress, request):
            yield text


LyricsWriter.lyrics_handler.__doc__ = LYRICS_API_DOC  # what the API page and MCP clients show


def lyrics_tab_meter(text: str, duration: Any, language: str) -> str:
    return fit_line("generate", {"lyrics": text, "audio_duration": duration, "vocal_language": language})


def use_in_generate(text: str, language: str) -> tuple[str, str, str]:
    return text, language, "generate"


def keep_lyrics(lyrics: str | None) -> tuple[str, gr.Button]:
    """Before the writer (or an idea) replaces Generate's lyrics: keep them, and offer them back."""
    kept = lyrics if isinstance(lyrics, str) else ""
    return kept, gr.Button(visible=bool(kept.strip()))


def undo_lyrics(kept: str | None) -> tuple[str, gr.Button]:
    return kept or "", gr.Button(visible=False)


def offer_undo(page: Page, button: gr.Button) -> None:
    """Clicking ``button`` replaces Generate's lyrics: keep what was typed and show Undo."""
    songs = page.songs
    button.click(
        keep_lyrics,
        inputs=songs.panels["generate"]["lyrics"],
        outputs=[songs.replaced_lyrics, songs.undo_lyrics],
        api_visibility="private",
        queue=False,
    )


def wire_lyrics(studio: Studio, runs: ActiveRuns, page: Page) -> None:
    """The Lyrics tab's events and "Write lyrics for me" on Generate."""
    tab, generate = page.lyrics, page.songs.panels["generate"]
    writer = LyricsWriter(studio, runs)
    tab.write.click(
        writer.lyrics_handler,
        inputs_kwargs=tab.inputs,
        outputs=[tab.text, tab.note],
        api_name="lyrics",
        **LYRICS_OPTIONS,
    )
    stop = Canceller(runs, LYRICS_LANE).cancel_handler
    tab.stop.click(stop, outputs=tab.note, queue=False, api_visibility="private")
    tab.preset.change(
        structure_of,
        inputs=[tab.preset, tab.inputs["structure"]],
        outputs=tab.inputs["structure"],
        api_visibility="private",
        queue=False,
    )
    gr.on(
        [tab.text.change, generate["audio_duration"].change],
        lyrics_tab_meter,
        inputs=[tab.text, generate["audio_duration"], tab.inputs["language"]],
        outputs=tab.meter,
        api_visibility="private",
        queue=False,
        show_progress="hidden",
    )
    tab.use.click(
        use_in_generate,
        inputs=[tab.text, tab.inputs["language"]],
        outputs=[generate["lyrics"], generate["vocal_language"], page.mode_nav],
        api_visibility="private",
        queue=False,
    )
    offer_undo(page, page.songs.write_for_me)
    page.songs.undo_lyrics.click(
        undo_lyrics,
        inputs=page.songs.replaced_lyrics,
        outputs=[generate["lyrics"], page.songs.undo_lyrics],
        api_visibility="private",
        queue=False,
    )
    page.songs.write_for_me.click(
        in_words(writer.lyrics_for_generate),
        inputs=[generate["prompt"], generate["vocal_language"]],
        outputs=generate["lyrics"],
        api_visibility="private",
        **LYRICS_OPTIONS,
    )
