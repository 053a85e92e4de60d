"""The page as data: its components gathered in small dataclasses, one ``Page`` for the whole.

``ui.layout`` builds a ``Page`` inside the Blocks and hands it to each ``wire_*`` function
(``wire_runs``, ``wire_idea``, ``wire_lyrics``, ``wire_lora``, ``wire_stems``, ``wire_library``,
``wire_settings_and_links``, ``wire_train``, ``add_api_endpoints``), which take ``(studio, runs, page)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import gradio as gr

from ui.library import Library, Stems
from ui.lora_panel import LoraPanel
from ui.lyrics_check_panel import LyricsCheckPanel
from ui.lyrics_tab import LyricsTab
from ui.song_form import SongForm
from ui.train_tab import TrainTab

Component = gr.components.Component


@dataclass
class SongTabs:
    """The four song tabs: each mode's form (by field name), fit meter and column (the Lyrics
    tab's column too), the Edit tab's method and FlowEdit's form, and Generate's helpers."""

    panels: dict[str, dict[str, Component]]
    meters: dict[str, gr.Markdown]
    columns: dict[str, gr.Column]
    edit_method: gr.Radio
    flow_column: gr.Column
    flow_panel: dict[str, Component]
    idea: gr.Textbox
    idea_button: gr.Button
    write_for_me: gr.Button
    flow_tuning: gr.Column  # FlowEdit's steps and source guidance, after the form (flow_column: before it)
    undo_lyrics: gr.Button  # puts back the lyrics that the writer or the idea replaced
    replaced_lyrics: gr.State
    describe: dict[str, gr.Button]  # Cover's, Extend's and Edit's "Describe this song"

    @property
    def form_inputs(self) -> dict[str, Component]:
        """Every mode's inputs keyed ``"mode.field"``; the run's handler picks the active mode's."""
        inputs = {f"{mode}.{name}": comp for mode, panel in self.panels.items() for name, comp in panel.items()}
        return inputs | {f"flow_edit.{name}": comp for name, comp in self.flow_panel.items()}


@dataclass
class SharedPanels:
    """What every song tab shares: the sampler, LoRA, finishing and export inputs (by field
    name), the LoRA helpers, the run buttons, and the boxes the Lyrics tab hides."""

    advanced: dict[str, Component]
    lora: LoraPanel
    generate: gr.Button
    retake: gr.Button
    cancel: gr.Button
    progress: gr.HTML  # the run's stage, beside the buttons (``ui.progress``)
    song_only: list[gr.components.Block]


@dataclass
class Takes:
    """The right-hand column: the latest run's summary, players and files, Vary, share links."""

    summary: gr.Markdown
    players: list[gr.Audio]
    downloads: gr.File
    variance: gr.Number
    vary: gr.Button
    share: gr.Button
    share_box: gr.Textbox
    last_run: gr.State  # this session's latest run, for Vary and Stems


@dataclass
class SettingsBox:
    text: gr.Code
    upload: gr.File
    apply: gr.Button
    reuse: gr.Button
    reuse_take: gr.Number  # which take's plan Reuse puts back


@dataclass
class Page:
    demo: gr.Blocks
    status: gr.Markdown
    history: gr.BrowserState
    browser: gr.BrowserState  # this browser's random id: its run is found again after a reload
    mode_nav: gr.Radio
    songs: SongTabs
    lyrics: LyricsTab
    shared: SharedPanels
    takes: Takes
    settings: SettingsBox
    library: Library
    stems: Stems
    lyrics_check: LyricsCheckPanel  # under the takes: the check, repair and edit by line
    train: TrainTab | None = None  # the Train tab (``ui.train_tab``)

    @cached_property
    def form(self) -> SongForm:
        """The song form as one whole, for what fills it from a saved request."""
        return SongForm(self.shared.advanced, self.songs.form_inputs, self.mode_nav, self.songs.edit_method)
