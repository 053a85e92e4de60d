"""The page's layout: a mode sidebar (pills on phones), the active mode's form with the shared
panels, and the takes column. ``build_page`` makes the components into a ``Page``;
``wire_page`` binds every event, each part by its own ``wire_*(studio, runs, page)``.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from lm.lyrics_fit import fit_line
from lora.presets import load_presets
from modes import REQUEST_TYPES, FlowEditRequest
from serving.env import on_space
from studio import STUDIO_NAME, Studio
from tooltips import TOOLTIPS
from ui.controls import build_main_panel, build_panel, build_shared_panel, file_input
from ui.describe import DESCRIBE_MODES, wire_describe
from ui.examples import EXAMPLE_FIELDS, EXAMPLES, example_rows
from ui.history import RunOwners
from ui.idea import wire_idea
from ui.library import build_library, build_stems, wire_library, wire_stems
from ui.lora_panel import build_lora_panel, wire_lora
from ui.lyrics_tab import LyricsTab, build_lyrics_tab, wire_lyrics
from ui.page import Page, SettingsBox, SharedPanels, SongTabs, Takes
from ui.runs import ActiveRuns, add_api_endpoints
from ui.song_form import wire_settings_and_links
from ui.takes import status_markdown, wire_runs, wire_status
from validation import MAX_BATCH
from variations import DEFAULT_VARIANCE

MODE_TABS = {"generate": "Generate", "cover": "Cover", "extend": "Extend", "edit": "Edit"}
EDIT_METHODS = (("Repaint the segment", "edit"), ("Keep the music, change the words (FlowEdit)", "flow_edit"))
FIT_INPUTS = ("lyrics", "instrumental", "audio_duration", "extend_seconds", "src_audio", "vocal_language")
TEST_MODEL_BANNER = (
    "**Test model: outputs noise.** The `{label}` model has random weights; it exists so the "
    "studio runs offline. Start with `--model xl-turbo` (or another checkpoint) for real music."
)


def build_ui(studio: Studio) -> gr.Blocks:
    """The whole page, its events and the named API endpoints."""
    # On a Space every visitor shares the outputs folder: a run opens only for the browser that made it.
    runs = ActiveRuns(owners=RunOwners() if on_space() else None)
    # Uploads in Gradio's cache are pruned hourly once a day old.
    with gr.Blocks(title=STUDIO_NAME, delete_cache=(3600, 86400)) as demo:
        page = build_page(studio, demo)
        wire_page(studio, runs, page)
    return demo


def build_page(studio: Studio, demo: gr.Blocks) -> Page:
    """Every component of the page, placed; call inside ``demo``."""
    with gr.Row(elem_classes="studio-header"):
        gr.Markdown(f"## {STUDIO_NAME}")
        status = gr.Markdown(status_markdown(studio), elem_classes="studio-status")
    if studio.backend.spec.is_tiny:
        gr.Markdown(TEST_MODEL_BANNER.format(label=studio.backend.spec.label), elem_classes="test-model-banner")
    # At the top level, not in the History accordion: a component inside a closed
    # accordion is not mounted, and then never reads or writes the browser's storage.
    history = gr.BrowserState([], storage_key="ace-music-studio-history")
    with gr.Row(elem_classes="studio-body", equal_height=False):
        # The mode list: a sidebar on wide screens, a strip of pills on phones (theme.CSS).
        with gr.Column(scale=0, min_width=160, elem_classes="studio-sidebar"):
            mode_nav = gr.Radio(
                choices=[*((title, mode) for mode, title in MODE_TABS.items()), ("Lyrics", "lyrics")],
                value="generate",
                show_label=False,
                container=False,
                elem_classes="mode-nav",
                elem_id="mode-nav",
            )
        with gr.Column(scale=3, min_width=340, elem_classes="studio-form"):
            songs, lyrics = build_song_tabs(studio)
            shared = build_shared_panels(studio)
        with gr.Column(scale=3, min_width=340, elem_classes="studio-takes"):
            takes = build_takes()
            settings = build_settings_box(studio)
            library = build_library(shared=on_space())
            stems = build_stems(studio.backend.variant == "base")
    return Page(demo, status, history, mode_nav, songs, lyrics, shared, takes, settings, library, stems)


def build_song_tabs(studio: Studio) -> tuple[SongTabs, LyricsTab]:
    """One column per song mode (only Generate's shown at first), then the Lyrics tab's."""
    panels: dict[str, dict[str, Any]] = {}
    meters: dict[str, gr.Markdown] = {}
    columns: dict[str, gr.Column] = {}
    extras: dict[str, Any] = {}  # the tabs' own parts: the idea, the Edit tab's method, FlowEdit's form
    for mode in MODE_TABS:
        with gr.Column(visible=mode == "generate", elem_classes="mode-panel") as column:
            panels[mode], meters[mode] = _song_tab(studio, mode, extras)
        columns[mode] = column
    with gr.Column(visible=False, elem_classes="mode-panel") as lyrics_column:
        lyrics = build_lyrics_tab(studio.lyrics is not None)
    columns["lyrics"] = lyrics_column
    return SongTabs(panels, meters, columns, **extras), lyrics


def _song_tab(studio: Studio, mode: str, extras: dict[str, Any]) -> tuple[dict[str, Any], gr.Markdown]:
    """One song mode's form and fit meter; its own parts go into ``extras``."""
    defaults = studio.defaults(REQUEST_TYPES[mode])
    planner = studio.planner is not None
    if mode == "generate":
        with gr.Accordion("Start from an idea", open=False, visible=planner):
            extras["idea"] = gr.Textbox(
                label="Idea",
                placeholder="a melancholic bossa nova about leaving Lisbon",
                info=TOOLTIPS["idea"],
                elem_id="idea",
            )
            extras["idea_button"] = gr.Button("Fill the form from this idea", elem_id="idea-fill")
    if mode == "edit":
        extras["edit_method"] = gr.Radio(
            choices=list(EDIT_METHODS),
            value="edit",
            label="Method",
            info=TOOLTIPS["edit_method"],
            elem_id="edit-method",
        )
    panel = build_main_panel(mode, defaults, base=studio.backend.variant == "base")
    if mode in DESCRIBE_MODES:
        extras.setdefault("describe", {})[mode] = gr.Button(
            "Describe this song", size="sm", visible=planner, elem_id=f"describe-{mode}"
        )
    meter = gr.Markdown("", elem_classes="fit-meter")
    if mode == "generate":
        extras["write_for_me"] = gr.Button(
            "Write lyrics for me", size="sm", visible=studio.lyrics is not None, elem_id="write-for-me"
        )
        panel["think"].visible = planner
        with gr.Accordion("Planner", open=False, visible=planner):
            panel |= build_panel("planner", mode, defaults)
        gr.Examples(
            example_rows(),
            inputs=[panel[name] for name in EXAMPLE_FIELDS],
            label="Examples",
            examples_per_page=len(EXAMPLES),
            example_labels=[example.name for example in EXAMPLES],
        )
    if mode == "edit":
        with gr.Column(visible=False, elem_classes="flow-edit") as flow_column:
            extras["flow_panel"] = build_panel("flow", "flow_edit", studio.defaults(FlowEditRequest))
        extras["flow_column"] = flow_column
    return panel, meter


def build_shared_panels(studio: Studio) -> SharedPanels:
    """Advanced, LoRA, and Finishing and export (shared by every song tab), then the run buttons."""
    with gr.Accordion("Advanced", open=False) as advanced_box:
        advanced = build_shared_panel(studio.defaults(), "advanced")
    with gr.Accordion("LoRA", open=False) as lora_box:
        advanced |= build_shared_panel(studio.defaults(), "lora")
        lora = build_lora_panel([preset.name for preset in load_presets()])
    with gr.Accordion("Finishing and export", open=False) as finishing_box:
        # From here on "advanced" is every shared input: the sampler, LoRA, finishing, export.
        advanced |= build_shared_panel(studio.defaults(), "output")
    with gr.Row(elem_classes="studio-actions") as song_actions:
        generate = gr.Button("Generate", variant="primary")
        retake = gr.Button("Retake", variant="secondary")
        cancel = gr.Button("Cancel", variant="stop")
    song_only = [advanced_box, lora_box, finishing_box, song_actions]  # hidden on the Lyrics tab
    return SharedPanels(advanced, lora, generate, retake, cancel, song_only)


def build_takes() -> Takes:
    """The latest run's summary, one player per take, its files, Vary and the share link."""
    summary = gr.Markdown("")
    players = [
        gr.Audio(label=f"Take {i + 1}", type="filepath", interactive=False, visible=i == 0, elem_id=f"take{i + 1}")
        for i in range(MAX_BATCH)
    ]
    downloads = gr.File(label="Downloads (WAV, FLAC, MP3, settings)", file_count="multiple", interactive=False)
    with gr.Row(elem_classes="vary-row"):
        variance = gr.Slider(
            0, 1, value=DEFAULT_VARIANCE, step=0.05, label="Variance", info=TOOLTIPS["variance"],
            elem_id="variance", min_width=260,
        )  # fmt: skip
        vary = gr.Button("Vary this run", variant="secondary", scale=0, min_width=140, elem_id="vary")
    with gr.Row(elem_classes="share-row"):
        share = gr.Button("Share link", variant="secondary", scale=0, min_width=120)
        share_box = gr.Textbox(
            show_label=False, placeholder=TOOLTIPS["share_link"], buttons=["copy"], elem_id="share-link"
        )
    last_run = gr.State("")
    return Takes(summary, players, downloads, variance, vary, share, share_box, last_run)


def build_settings_box(studio: Studio) -> SettingsBox:
    """The latest run's settings.json, editable, and a way back into the form."""
    with gr.Accordion("Settings", open=False):
        text = gr.Code(label="settings.json", language="json", interactive=True, elem_id="settings_text")
        gr.Markdown(TOOLTIPS["settings_text"])
        upload = file_input(gr.File(label="Upload settings.json", file_types=[".json"]))
        with gr.Row():
            apply = gr.Button("Apply settings")
            reuse = gr.Button("Reuse its plan", visible=studio.planner is not None)
    return SettingsBox(text, upload, apply, reuse)


class ModeSwitch:
    """The chosen mode's column shown; the song-only boxes hide on the Lyrics tab."""

    def __init__(self, modes: list[str], song_only: int) -> None:
        self.modes = modes
        self.song_only = song_only

    def show_mode(self, mode: str) -> list:
        columns = [gr.Column(visible=name == mode) for name in self.modes]
        return [*columns, *(gr.update(visible=mode != "lyrics") for _ in range(self.song_only))]


def show_flow_edit(method: str) -> gr.Column:
    return gr.Column(visible=method == "flow_edit")


class FitMeter:
    """The fit meter under one tab: its lyrics, length and the shared bpm."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def fit(self, **values: Any) -> str:
        return fit_line(self.mode, values)


def wire_navigation(studio: Studio, runs: ActiveRuns, page: Page) -> None:
    """The mode sidebar, the Edit tab's method, and the fit meter under each tab."""
    songs = page.songs
    page.mode_nav.change(
        ModeSwitch(list(songs.columns), len(page.shared.song_only)).show_mode,
        inputs=page.mode_nav,
        outputs=[*songs.columns.values(), *page.shared.song_only],
        api_visibility="private",
        queue=False,
    )
    songs.edit_method.change(
        show_flow_edit, inputs=songs.edit_method, outputs=songs.flow_column, api_visibility="private", queue=False
    )
    for mode, panel in songs.panels.items():
        watched = {name: panel[name] for name in FIT_INPUTS if name in panel} | {"bpm": page.shared.advanced["bpm"]}
        gr.on(
            [component.change for component in watched.values()],
            FitMeter(mode).fit,
            inputs_kwargs=watched,
            outputs=songs.meters[mode],
            api_visibility="private",
            queue=False,
            show_progress="hidden",
        )


def wire_page(studio: Studio, runs: ActiveRuns, page: Page) -> None:
    """Every event of the page and the named API endpoints, in the order the page was first wired."""
    for wire in (
        wire_navigation,
        wire_runs,
        wire_stems,
        wire_settings_and_links,
        wire_idea,
        wire_describe,
        wire_lyrics,
        wire_lora,
        wire_library,
        add_api_endpoints,
        wire_status,
    ):
        wire(studio, runs, page)
