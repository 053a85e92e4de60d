"""The song form as one whole: every tab's fields and the shared panels, read back per mode
for a run, and filled from a saved request (Apply settings, Restore, Reuse its plan, a share
link). ``ui.layout`` builds the components; this module binds them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from modes import REQUEST_TYPES, FlowEditRequest, SongRequest
from outputs import SETTINGS_FILE, load_settings
from studio import INPUT_FILES, Studio, replay_values
from ui.history import RunOwners
from ui.runs import ActiveRuns, session_key
from ui.share import LINK_AUDIO_STAND_IN, MODE_PARAM, request_from_query, share_query
from ui.words import in_words, user_terms
from validation import safe_message

if TYPE_CHECKING:
    from ui.page import Page

SHARE_LINK_JS = "(q) => q && q.startsWith('?') ? window.location.origin + window.location.pathname + q : q"
LINK_FIELDS = frozenset(name for cls in REQUEST_TYPES.values() for name in cls.field_names())


def tab_of(mode: str) -> str:
    """The tab a song mode lives on: FlowEdit is a method of the Edit tab."""
    return "edit" if mode == FlowEditRequest.mode else mode


def song_values(tab: str, edit_method: str | None, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The song mode a tab runs (the Edit tab's method picks FlowEdit) and its request values,
    from the shared inputs (plain names) and every mode's form inputs (keyed ``"mode.field"``);
    FlowEdit also reads the Edit tab's form."""
    mode = FlowEditRequest.mode if tab == "edit" and edit_method == FlowEditRequest.mode else tab
    fields = set(REQUEST_TYPES[mode].field_names())
    forms = (tab_of(mode), mode)
    values = {name: value for name, value in inputs.items() if "." not in name}
    for key, value in inputs.items():
        form, _, name = key.partition(".")
        if form in forms and name in fields:
            values[name] = value
    return mode, values


def form_value(name: str, value: Any) -> Any:
    """A request value as its form component takes it."""
    if name in INPUT_FILES and not value:
        return None  # an empty file input, not a file called "" (Gradio would resolve it to a folder)
    if isinstance(value, tuple):
        return list(value)  # a multiselect's value
    return value


def with_saved_inputs(
    studio: Studio, data: dict[str, Any], may_read: Callable[[str], bool] = lambda run_id: True
) -> tuple[dict[str, Any], list[str]]:
    """The saved request with its files pointed at the copies kept in its own run folder, and a
    note for each file dropped. A settings record never names a file on the server: a file is
    taken only as a copy kept in the folder of the record's ``run_id`` (checked by the store,
    links followed) that ``may_read`` allows; any other file named is dropped, not the record."""
    values = dict(data["request"])
    kept = data.get("inputs") or {}
    notes = [] if isinstance(kept, dict) else ["inputs: not a list of kept files; ignored"]
    kept = kept if isinstance(kept, dict) else {}
    run_id = data.get("run_id")
    for field in INPUT_FILES:
        named = values.pop(field, None)
        if field in kept:
            try:
                if not may_read(run_id):  # asked first, so a stranger learns nothing of what exists
                    raise ValueError(f"run {str(run_id)[:80]!r} was not made in this browser")
                path = studio.store.kept_file(run_id, kept[field])
            except ValueError as error:
                notes.append(f"{field}: dropped ({error}); upload it again")
                continue
            values[field] = str(path)
        elif named:
            notes.append(f"{field}: dropped (a settings file cannot name a file on the server); upload it again")
    notes += [f"inputs: {str(name)[:40]!r} is not a file setting; ignored" for name in kept if name not in INPUT_FILES]
    return values, notes


def restorable(cls: type[SongRequest], values: dict[str, Any]) -> SongRequest:
    """A request for the form, valid but for a source song the visitor still has to upload."""
    stand_in = (
        {"src_audio": LINK_AUDIO_STAND_IN} if "src_audio" in cls.field_names() and not values.get("src_audio") else {}
    )
    fields = set(cls.field_names())
    values = {name: value for name, value in values.items() if name in fields or name not in INPUT_FILES}
    request = cls.from_values({**values, **stand_in})
    return dataclasses.replace(request, **dict.fromkeys(stand_in, ""))


class SongForm:
    """The components a saved request fills: the shared panels (by field name), every mode's
    form (keyed ``"mode.field"``), the mode nav and the Edit tab's method."""

    def __init__(
        self,
        shared: dict[str, gr.components.Component],
        forms: dict[str, gr.components.Component],
        mode_nav: gr.Radio,
        edit_method: gr.Radio,
    ) -> None:
        self.shared = shared
        self.forms = forms
        self.mode_nav = mode_nav
        self.edit_method = edit_method
        self.targets: list[gr.components.Component] = [*shared.values(), *forms.values(), mode_nav, edit_method]

    def updates(self, restored: SongRequest) -> list:
        """Values for ``targets``: the request's own mode's form (FlowEdit's is the Edit tab's),
        the shared panels, the mode nav and the edit method; other forms are left as they are."""
        updates = [form_value(name, getattr(restored, name)) for name in self.shared]
        tab = tab_of(restored.mode)
        for key in self.forms:
            field_mode, name = key.split(".", 1)
            own = field_mode in (restored.mode, tab) and hasattr(restored, name)
            updates.append(form_value(name, getattr(restored, name)) if own else gr.skip())
        return [*updates, tab, restored.mode if tab == "edit" else gr.skip()]

    def from_settings(
        self, studio: Studio, data: dict[str, Any], may_read: Callable[[str], bool] = lambda run_id: True
    ) -> list:
        """A saved run's settings as form updates; ``gr.Error`` when they do not make a request,
        a warning naming each file that was dropped."""
        try:
            mode = data.get("mode", "generate")
            if mode not in REQUEST_TYPES:
                raise ValueError(f"settings: unknown mode {str(mode)[:40]!r}")
            values, notes = with_saved_inputs(studio, data, may_read)
            restored = restorable(REQUEST_TYPES[mode], values)
        except ValueError as error:
            raise gr.Error(safe_message(str(error)), title="Could not apply settings") from error
        for note in notes:
            gr.Warning(safe_message(note), title="A file was left out")
        return self.updates(restored)


def pasted_settings(text: str | None, upload: str | None) -> dict[str, Any]:
    """The settings record from the upload (a file in Gradio's upload cache) or else the pasted
    JSON text; text is never read as a path on the server. ``ValueError`` names what is wrong."""
    if upload is not None and not isinstance(upload, str):
        raise ValueError("settings: the upload is not an uploaded file; upload a settings.json")
    if upload:
        return load_settings(Path(upload))
    if not text or not str(text).strip():
        raise ValueError("settings: paste a settings.json into the box or upload one first")
    return load_settings(str(text))


def plan_values(data: dict[str, Any]) -> dict[str, Any]:
    """A saved run's request with its plan in place. A Vary run of a planned run replayed its
    parent's plan (its request carries the codes, it has no plan of its own): reuse that."""
    saved = data.get("request")
    if not data.get("plan") and data.get("vary") and isinstance(saved, dict) and saved.get("audio_codes"):
        return dict(saved)
    return replay_values(data)


class SettingsHandlers:
    """Apply settings, Restore a saved run, Reuse its plan, share links both ways.

    With ``owners`` (a shared studio), a run's kept files and the run itself are opened only
    for the session that made it."""

    def __init__(self, studio: Studio, owners: RunOwners | None, form: SongForm) -> None:
        self.studio = studio
        self.owners = owners
        self.form = form

    def reader(self, request: gr.Request | None) -> Callable[[str], bool]:
        owners = self.owners
        if owners is None:
            return lambda run_id: True
        session = session_key(request)
        return lambda run_id: owners.owns(session, run_id)

    def apply_handler(self, text: str, upload: str | None, request: gr.Request = None) -> list:
        try:
            data = pasted_settings(text, upload)
        except ValueError as error:
            raise gr.Error(safe_message(str(error)), title="Could not apply settings") from error
        return self.form.from_settings(self.studio, data, self.reader(request))

    def restore_handler(self, run_id: str | None, request: gr.Request = None) -> list:
        if not run_id:
            raise gr.Error("Pick a run from the history first.")
        may_read = self.reader(request)
        try:
            if not may_read(run_id):
                raise ValueError(f"run_id: no run called {str(run_id)[:80]!r} was made in this browser")
            data = load_settings(self.studio.store.run_folder(run_id) / SETTINGS_FILE)
        except ValueError as error:
            raise gr.Error(safe_message(f"{error} (it may have been deleted)"), title="Could not restore") from error
        # The files are those kept in the folder it was read from, whatever its record says.
        return self.form.from_settings(self.studio, {**data, "run_id": run_id}, may_read)

    def reuse_handler(self, text: str, upload: str | None, request: gr.Request = None) -> list:
        try:
            data = pasted_settings(text, upload)
            values, notes = with_saved_inputs(self.studio, {**data, "request": plan_values(data)}, self.reader(request))
            restored = restorable(REQUEST_TYPES["generate"], values)
        except (ValueError, KeyError) as error:
            raise gr.Error(safe_message(str(error)), title="Could not reuse the plan") from error
        for note in notes:
            gr.Warning(safe_message(note), title="A file was left out")
        gr.Info("The plan's codes are in Planner → Plan to replay: Generate renders them without planning.")
        return self.form.updates(restored)

    def open_link(self, request: gr.Request) -> list:
        params = [(k, v) for k, v in request.query_params.items() if k == MODE_PARAM or k in LINK_FIELDS]
        skip = [gr.skip()] * len(self.form.targets)
        try:
            restored = request_from_query(params)
        except ValueError as error:
            # In the page's words, and on a queued event: an unqueued one drops its messages.
            gr.Warning(safe_message(f"This link's settings could not be used: {user_terms(str(error))}"), duration=None)
            return skip
        return skip if restored is None else self.form.updates(restored)


def share_handler(mode: str, edit_method: str = "edit", **inputs: Any) -> str:
    """The form's settings (never audio) as a share link's query string."""
    mode, values = song_values(mode, edit_method, inputs)
    if "src_audio" in values and not values["src_audio"]:
        values["src_audio"] = LINK_AUDIO_STAND_IN  # a link is valid before the song is uploaded
    try:
        return share_query(REQUEST_TYPES[mode].from_values(values))
    except ValueError as error:
        raise gr.Error(safe_message(str(error)), title="Check the settings") from error


def wire_settings_and_links(studio: Studio, runs: ActiveRuns, page: Page) -> None:
    """Apply settings (the ``apply_settings`` endpoint), Reuse its plan, share links both ways."""
    form, box = page.form, page.settings
    handlers = SettingsHandlers(studio, runs.owners, form)
    box.reuse.click(
        in_words(handlers.reuse_handler), inputs=[box.text, box.upload], outputs=form.targets, api_visibility="private"
    )
    # Share links: the form's settings (never audio) in the page's query string.
    # Queued, like every event that can refuse: Gradio drops an unqueued event's error message.
    page.takes.share.click(
        in_words(share_handler),
        inputs_kwargs={"mode": form.mode_nav, "edit_method": form.edit_method, **form.shared, **form.forms},
        outputs=page.takes.share_box,
        api_visibility="private",
    ).then(
        None,
        inputs=page.takes.share_box,
        outputs=page.takes.share_box,
        js=SHARE_LINK_JS,
    )
    page.demo.load(handlers.open_link, outputs=form.targets, api_visibility="private")
    box.apply.click(
        handlers.apply_handler,
        inputs=[box.text, box.upload],
        outputs=form.targets,
        api_name="apply_settings",
    )
