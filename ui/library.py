"""What the page keeps of finished runs: this browser's History, the outputs folder's Library,
and Stems of a take (through the one run guard). ``ui.layout`` places them beside the takes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from serving.zerogpu import stems_on_zerogpu
from stems import DEFAULT_STEM_MODEL, STEM_MODELS, StemModelUnavailableError
from studio import Studio
from ui.controls import pass_through, range_number
from ui.history import RunOwners, history_choices
from ui.runs import RUN_OPTIONS, ActiveRuns, Job, ProgressRelay, Words, guarded_run, session_key
from ui.song_form import SettingsHandlers
from ui.words import in_words
from validation import MAX_BATCH, coerce_value, safe_message

if TYPE_CHECKING:
    from ui.page import Page

STEMS_EXTRACT_HINT = (
    "This base checkpoint can also pull one instrument out itself: Edit → task `extract` and a "
    "track name. Demucs is faster and splits everything at once; extract re-renders the track with the model."
)


@dataclass
class Library:
    history_pick: gr.Dropdown
    history_player: gr.Audio
    history_restore: gr.Button
    # The outputs folder's Library; None on a Space, where it would show every visitor's runs.
    pick: gr.Dropdown | None = None
    player: gr.Audio | None = None
    refresh: gr.Button | None = None
    restore: gr.Button | None = None
    delete: gr.Button | None = None
    confirm: gr.Button | None = None


def build_library(shared: bool = False) -> Library:
    """The History (this browser) and, unless ``shared`` (a Space), Library (outputs folder) accordions."""
    with gr.Accordion("History (this browser)", open=False):
        history_pick = gr.Dropdown(choices=[], label="Recent runs", value=None, elem_id="history-pick")
        history_player = gr.Audio(type="filepath", interactive=False, label="Take 1", visible=False)
        history_restore = gr.Button("Restore its settings", elem_id="history-restore")
    if shared:
        # Not built at all: a hidden component still sends its choices and answers its events.
        return Library(history_pick, history_player, history_restore)
    with gr.Accordion("Library (outputs folder)", open=False):
        pick = gr.Dropdown(choices=[], label="Saved runs", value=None)
        player = gr.Audio(type="filepath", interactive=False, label="Take 1", visible=False)
        with gr.Row():
            refresh = gr.Button("Refresh", variant="secondary")
            restore = gr.Button("Restore its settings")
            delete = gr.Button("Delete", variant="stop")
        confirm = gr.Button("Really delete this run", variant="stop", visible=False)
    return Library(history_pick, history_player, history_restore, pick, player, refresh, restore, delete, confirm)


class LibraryHandlers:
    """Pick a run to hear its first take, list this browser's History and the outputs folder's
    runs, delete one. With ``owners`` (a shared studio) History offers and plays only this
    browser's runs."""

    def __init__(self, studio: Studio, owners: RunOwners | None = None) -> None:
        self.studio = studio
        self.owners = owners

    def pick_handler(self, run_id: str | None, request: gr.Request = None) -> dict:
        try:
            if self.owners is not None and not self.owners.owns(session_key(request), run_id or ""):
                raise ValueError("not this browser's run")
            folder = self.studio.store.run_folder(run_id or "")
            take = folder / "take1.mp3"
            return gr.update(value=str(take) if take.is_file() and not take.is_symlink() else None, visible=True)
        except ValueError:
            return gr.update(value=None, visible=False)

    def history_list(self, history: list | None, request: gr.Request = None) -> gr.Dropdown:
        if self.owners is not None:  # only entries this server made for this browser, now claimed by this session
            history = self.owners.adopt(session_key(request), history)
        return gr.Dropdown(choices=history_choices(history))

    def library_list(self, selected: str | None = None) -> gr.Dropdown:
        choices = history_choices(self.studio.store.list_runs())
        keep = selected if selected in {value for _, value in choices} else None
        return gr.Dropdown(choices=choices, value=keep)

    def delete_handler(self, run_id: str | None) -> tuple:
        try:
            self.studio.store.delete_run(run_id or "")
        except (ValueError, OSError) as error:
            raise gr.Error(str(error), title="Could not delete") from error
        gr.Info(f"Deleted {run_id}.")
        return self.library_list(), gr.Button(visible=False), gr.update(value=None, visible=False)


def confirm_button(run_id: str | None) -> gr.Button:
    return gr.Button(visible=bool(run_id))


def wire_library(studio: Studio, runs: ActiveRuns, page: Page) -> None:
    """Pick a run to hear its first take, restore its settings into the form, or delete it.
    On a shared studio (``runs.owners``) History offers, plays and restores only this browser's runs."""
    library, targets = page.library, page.form.targets
    handlers = LibraryHandlers(studio, runs.owners)
    restore = in_words(SettingsHandlers(studio, runs.owners, page.form).restore_handler)
    library.history_restore.click(restore, inputs=library.history_pick, outputs=targets, api_visibility="private")
    library.history_pick.change(
        handlers.pick_handler, inputs=library.history_pick, outputs=library.history_player, api_visibility="private"
    )
    # The stored list arrives from the browser after the page loads: fill the list then.
    gr.on(
        [page.demo.load, page.history.change],
        handlers.history_list,
        inputs=page.history,
        outputs=library.history_pick,
        api_visibility="private",
        queue=False,
    )
    if library.pick is not None:
        _wire_outputs_library(page, handlers, restore)


def _wire_outputs_library(page: Page, handlers: LibraryHandlers, restore: Callable[..., list]) -> None:
    """The Library: every run in the outputs folder, so it survives restarts and other browsers."""
    library = page.library
    gr.on(
        [page.demo.load, library.refresh.click],
        handlers.library_list,
        inputs=library.pick,
        outputs=library.pick,
        api_visibility="private",
        queue=False,
    )
    library.pick.change(handlers.pick_handler, inputs=library.pick, outputs=library.player, api_visibility="private")
    library.restore.click(restore, inputs=library.pick, outputs=page.form.targets, api_visibility="private")
    library.delete.click(
        confirm_button, inputs=library.pick, outputs=library.confirm, api_visibility="private", queue=False
    )
    library.confirm.click(
        handlers.delete_handler,
        inputs=library.pick,
        outputs=[library.pick, library.confirm, library.player],
        api_visibility="private",
    )


@dataclass
class Stems:
    take: gr.Number
    model: gr.Dropdown
    button: gr.Button
    files: gr.File


def build_stems(base_checkpoint: bool) -> Stems:
    with gr.Accordion("Stems", open=False):
        with gr.Row():
            take = range_number(1, MAX_BATCH, 1, label="Take", value=1)
            model = gr.Dropdown(
                choices=[(f"{name}: {about}", name) for name, about in STEM_MODELS.items()],
                value=DEFAULT_STEM_MODEL,
                label="Stem model",
            )
        button = gr.Button("Split into stems")
        if base_checkpoint:
            gr.Markdown(STEMS_EXTRACT_HINT, elem_classes="control-help")
        files = gr.File(label="Stems (FLAC, and all of them in a zip)", file_count="multiple")
    return Stems(take, model, button, files)


STEMS_WORDS = Words(
    failed="Could not split into stems",
    unavailable="Could not split into stems",
    crashed="Stem separation failed",
    disk="Could not write the stems",  # nothing half-written is left: add_to_run removes its staging folder
    cancelled="Cancelled: no stems were saved.",
    refused=(StemModelUnavailableError,),
)


class StemSplitting:
    """The Stems button's and the ``stems`` endpoint's handler: every failure in words, through
    the one run guard, on its ZeroGPU entry point on a Space."""

    def __init__(self, studio: Studio, runs: ActiveRuns) -> None:
        self.studio = studio
        self.runs = runs

    def stems_handler(
        self,
        run_id: str,
        take: Any,
        stem_model: Any,
        progress: gr.Progress = gr.Progress(),
        request: gr.Request = None,
    ) -> list[str]:
        if not run_id:
            raise gr.Error("Generate something first (or pass the run_id of a saved run).")
        session = session_key(request)
        try:
            take_number = 1 if take in (None, "") else coerce_value("take", int, take)
            model = coerce_value("stem_model", str, stem_model)
        except ValueError as error:
            raise gr.Error(safe_message(str(error)), title="Check the settings") from error
        try:
            self.runs.check_owner(session, run_id)
        except ValueError as error:
            raise gr.Error(safe_message(str(error)), title=STEMS_WORDS.failed) from error
        relay = ProgressRelay(progress)
        job = Job(
            lambda control: self.studio.stems(run_id, take_number, model, control),
            lambda: stems_on_zerogpu(run_id, take_number, model, relay),
            words=STEMS_WORDS,
        )
        paths = guarded_run(self.runs, session, relay, job)
        return [str(path) for path in paths or []]


def stems_handler(studio: Studio, runs: ActiveRuns) -> Callable[..., list[str]]:
    """The Stems button's and the ``stems`` endpoint's handler."""
    return StemSplitting(studio, runs).stems_handler


def wire_stems(studio: Studio, runs: ActiveRuns, page: Page) -> None:
    """Split a take of this session's latest run (the button) or of a named run (the ``stems`` endpoint)."""
    stems = page.stems
    handler = stems_handler(studio, runs)
    inputs: dict[str, Any] = {"take": pass_through(stems.take), "stem_model": pass_through(stems.model)}
    stems.button.click(
        in_words(handler),
        inputs_kwargs={"run_id": page.takes.last_run, **inputs},
        outputs=stems.files,
        api_visibility="private",
        **RUN_OPTIONS,
    )
    # The named endpoint takes the run by name (settings["run_id"]).
    gr.Button(visible=False).click(
        handler,
        inputs_kwargs={"run_id": gr.Textbox(visible=False), **inputs},
        outputs=stems.files,
        api_name="stems",
        **RUN_OPTIONS,
    )
