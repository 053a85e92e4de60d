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
from theme import theme_toggle
from tooltips import TOOLTIPS
from ui.controls import (
    CONTROLS,
    build_control,
    build_main_panel,
    build_panel,
    build_shared_panel,
    file_input,
    range_number,
)
from ui.describe import DESCRIBE_MODES, wire_describe
from ui.examples import EXAMPLE_FIELDS, EXAMPLES, example_rows
from ui.history import RunOwners
from ui.idea import wire_idea
from ui.library import build_library, build_stems, wire_library, wire_stems
from ui.lora_panel import build_lora_panel, wire_lora
from ui.lyrics_check_panel import build_lyrics_check, wire_lyrics_check
from ui.lyrics_tab import LyricsTab, build_lyrics_tab, wire_lyrics
from ui.page import Page, SettingsBox, SharedPanels, SongTabs, Takes
from ui.runs import ActiveRuns, add_api_endpoints
from ui.song_form import wire_settings_and_links
from ui.takes import status_markdown, wire_runs, wire_status
from ui.train_tab import build_train_tab, wire_train
from validation import MAX_BATCH
from variations import DEFAULT_VARIANCE

MODE_TABS = {"generate": "Generate", "cover": "Cover", "extend": "Extend", "edit": "Edit"}
EDIT_METHODS = (("Repaint the segment", "edit"), ("Keep the music, change the words (FlowEdit)", "flow_edit"))
GUIDANCE_FIELDS = ("guidance_scale", "cfg_interval_start", "cfg_interval_end")
FIT_INPUTS = ("lyrics", "instrumental", "audio_duration", "extend_seconds", "src_audio", "vocal_language")
TEST_MODEL_BANNER = "**Test model `{label}`: outputs noise.** For music, start with `--model xl-turbo`."
NO_TAKES_YET = "Your takes appear here."


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
        theme_toggle()
    if studio.backend.spec.is_tiny:
        gr.Markdown(TEST_MODEL_BANNER.format(label=studio.backend.spec.label), elem_classes="test-model-banner")
    # At the top level, not in the History accordion: a component inside a closed
    # accordion is not mounted, and then never reads or writes the browser's storage.
    history = gr.BrowserState([], storage_key="ace-music-studio-history")
    browser = gr.BrowserState("", storage_key="ace-music-studio-browser")
    with gr.Row(elem_classes="studio-body", equal_height=False):
        # The mode list: a sidebar on wide screens, a strip of pills on phones (theme.CSS).
        with gr.Column(scale=0, min_width=160, elem_classes="studio-sidebar"):
            mode_nav = gr.Radio(
                choices=[
                    *((title, mode) for mode, title in MODE_TABS.items()),
                    ("Lyrics", "lyrics"),
                    ("Train", "train"),
                ],
                value="generate",
                show_label=False,
                container=False,
                elem_classes="mode-nav",
                elem_id="mode-nav",
            )
        with gr.Column(scale=3, min_width=340, elem_classes="studio-form"):
            songs, lyrics = build_song_tabs(studio)
            with gr.Column(visible=False, elem_classes="mode-panel") as songs.columns["train"]:
                train = build_train_tab(studio)
            shared = build_shared_panels(studio)
        with gr.Column(scale=3, min_width=340, elem_classes="studio-takes"):
            takes = build_takes()
            lyrics_check = build_lyrics_check(studio)
            settings = build_settings_box(studio)
            library = build_library(shared=on_space())
            stems = build_stems(studio.backend.variant == "base")
    return Page(
        demo,
        status,
        history,
        browser,
        mode_nav,
        songs,
        lyrics,
        shared,
        takes,
        settings,
        library,
        stems,
        lyrics_check,
        train,
    )


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
        examples_slot = gr.Column(elem_classes="examples-slot")  # filled below, once the form exists
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
    if mode == "edit":  # FlowEdit's "now" fields come before the form's style and lyrics, which say what it should be
        extras["flow_column"], now = _flow_fields(studio, now=True)
    panel = build_main_panel(mode, defaults, base=studio.backend.variant == "base")
    if mode in DESCRIBE_MODES:
        extras.setdefault("describe", {})[mode] = gr.Button(
            "Describe this song", size="sm", visible=planner, elem_id=f"describe-{mode}"
        )
    meter = gr.Markdown("", elem_classes="fit-meter")
    if mode == "generate":
        with gr.Row():
            extras["write_for_me"] = gr.Button(
                "Write lyrics for me", size="sm", visible=studio.lyrics is not None, elem_id="write-for-me"
            )
            extras["undo_lyrics"] = gr.Button(
                "Undo: put my lyrics back", size="sm", visible=False, elem_id="lyrics-undo"
            )
        extras["replaced_lyrics"] = gr.State("")
        panel["think"].visible = planner
        with gr.Accordion("Planner", open=False, visible=planner):
            panel |= build_panel("planner", mode, defaults)
        with examples_slot:  # above the idea and the prompt: where a new user starts
            gr.Examples(
                example_rows(),
                inputs=[panel[name] for name in EXAMPLE_FIELDS],
                label="Examples",
                examples_per_page=len(EXAMPLES),
                example_labels=[example.name for example in EXAMPLES],
            )
    if mode == "edit":
        extras["flow_tuning"], tuning = _flow_fields(studio, now=False)
        extras["flow_panel"] = now | tuning
    return panel, meter


FLOW_NOW_FIELDS = ("source_prompt", "source_lyrics")


def _flow_fields(studio: Studio, now: bool) -> tuple[gr.Column, dict[str, Any]]:
    """FlowEdit's own fields in a hidden column: the song as it is now, or the edit's tuning."""
    defaults = studio.defaults(FlowEditRequest)
    with gr.Column(visible=False, elem_classes="flow-edit") as column:
        if now:
            gr.Markdown(FLOW_NOW_NOTE, elem_classes="control-help")
        fields = {
            c.name: build_control(c, getattr(defaults, c.name), elem_id=f"flow_edit-{c.name}")
            for c in CONTROLS
            if c.panel == "flow" and (c.name in FLOW_NOW_FIELDS) == now
        }
    if "source_guidance_scale" in fields:
        fields["source_guidance_scale"].visible = studio.backend.variant != "turbo"  # turbo ignores guidance
    return column, fields


FLOW_NOW_NOTE = "**The song as it is now**; below, under Style and Lyrics, what it should become."


def build_shared_panels(studio: Studio) -> SharedPanels:
    """Advanced, LoRA, and Finishing and export (shared by every song tab), then the run buttons."""
    with gr.Accordion("Advanced", open=False) as advanced_box:
        advanced = build_shared_panel(studio.defaults(), "advanced")
        for name in GUIDANCE_FIELDS:  # turbo is guidance-distilled: the pipeline runs it at 1.0 whatever is set
            advanced[name].visible = studio.backend.variant != "turbo"
    with gr.Accordion("LoRA", open=False) as lora_box:
        lora, stack = build_lora_panel(
            [preset.name for preset in load_presets()], lambda: build_shared_panel(studio.defaults(), "lora")
        )
        advanced |= stack
    with gr.Accordion("Finishing and export", open=False) as finishing_box:
        # From here on "advanced" is every shared input: the sampler, LoRA, finishing, export.
        advanced |= build_shared_panel(studio.defaults(), "output")
    # The action bar: sticky at the foot of the screen (theme.LOOP_CSS), so that the prompt, the
    # lyrics and Generate share the first screen; the run's stage shows in it.
    with gr.Column(elem_classes="studio-actions-bar", elem_id="action-bar") as song_actions:
        with gr.Row(elem_classes="studio-actions"):
            generate = gr.Button("Generate", variant="primary", elem_id="generate", min_width=90)
            retake = gr.Button("Retake", variant="secondary", elem_id="retake", min_width=90)
            cancel = gr.Button("Cancel", variant="stop", elem_id="cancel", min_width=90)
        progress = gr.HTML("", elem_id="run-progress", elem_classes="run-progress")
    song_only = [advanced_box, lora_box, finishing_box, song_actions]  # hidden on the Lyrics tab
    return SharedPanels(advanced, lora, generate, retake, cancel, progress, song_only)


def build_takes() -> Takes:
    """The latest run's summary, one player per take, its files, Vary and the share link."""
    summary = gr.Markdown(NO_TAKES_YET, elem_id="run-summary")
    # Shown once there is a run: empty players and a file box would fill the first screen.
    players = [
        gr.Audio(
            label=f"Take {i + 1}",
            type="filepath",
            interactive=False,
            visible=False,
            elem_id=f"take{i + 1}",
            elem_classes="take-player",
        )
        for i in range(MAX_BATCH)
    ]
    downloads = gr.File(
        label="Downloads (WAV, FLAC, MP3, settings)", file_count="multiple", interactive=False, visible=False,
        elem_id="downloads", elem_classes="take-downloads",
    )  # fmt: skip
    with gr.Row(elem_classes="vary-row"):
        variance = range_number(
            0, 1, 0.05, label="Variance", value=DEFAULT_VARIANCE, info=TOOLTIPS["variance"],
            elem_id="variance", min_width=260,
        )  # fmt: skip
        vary = gr.Button(
            "Vary this run", variant="secondary", scale=0, min_width=140, elem_id="vary", interactive=False
        )  # until there is a run to vary
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
            planner = studio.planner is not None
            reuse_take = range_number(
                1, MAX_BATCH, 1, label="Take", value=1, info=TOOLTIPS["reuse_take"], visible=planner,
                min_width=120, scale=0,
            )  # fmt: skip
            reuse = gr.Button("Reuse its plan", visible=planner)
    return SettingsBox(text, upload, apply, reuse, reuse_take)


class ModeSwitch:
    """The chosen mode's column shown; the song-only boxes hide on the Lyrics tab."""

    def __init__(self, modes: list[str], song_only: int) -> None:
        self.modes = modes
        self.song_only = song_only

    def show_mode(self, mode: str) -> list:
        columns = [gr.Column(visible=name == mode) for name in self.modes]
        return [*columns, *(gr.update(visible=mode not in ("lyrics", "train")) for _ in range(self.song_only))]


def show_flow_edit(method: str) -> list[gr.Column]:
    return [gr.Column(visible=method == "flow_edit")] * 2  # the "now" fields and the tuning


def middle_third(src_audio: Any) -> tuple:
    """Edit's segment once a source is loaded: its middle third, a valid edit to start from
    (the header alone is read; an unreadable file leaves the fields for the run to refuse)."""
    from audio_io import AudioInputError, probe

    if not isinstance(src_audio, str) or not src_audio:
        return gr.skip(), gr.skip()
    try:
        seconds = probe(src_audio, "Source song").duration
    except (AudioInputError, OSError):
        return gr.skip(), gr.skip()
    return round(seconds / 3, 1), round(2 * seconds / 3, 1)


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
        show_flow_edit,
        inputs=songs.edit_method,
        outputs=[songs.flow_column, songs.flow_tuning],
        api_visibility="private",
        queue=False,
    )
    edit = songs.panels["edit"]
    edit["src_audio"].change(
        middle_third,
        inputs=edit["src_audio"],
        outputs=[edit["repainting_start"], edit["repainting_end"]],
        api_visibility="private",
        show_progress="hidden",
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
        wire_lyrics_check,
        wire_train,
        add_api_endpoints,
        wire_status,
    ):
        wire(studio, runs, page)
