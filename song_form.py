"""The song form as one whole: every tab's fields and the shared panels, read back per mode
for a run, and filled from a saved request (Apply settings, Restore, Reuse its plan, a share
link). ``app.py`` builds the components; this module binds them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from flow_edit import FlowEditRequest
from modes import SongRequest, safe_message
from outputs import SETTINGS_FILE, load_settings
from share import LINK_AUDIO_STAND_IN, MODE_PARAM, request_from_query, share_query
from studio import INPUT_FILES, SONG_TYPES, Studio, replay_values

SHARE_LINK_JS = "(q) => q && q.startsWith('?') ? window.location.origin + window.location.pathname + q : q"
LINK_FIELDS = frozenset(name for cls in SONG_TYPES.values() for name in cls.field_names())


def tab_of(mode: str) -> str:
    """The tab a song mode lives on: FlowEdit is a method of the Edit tab."""
    return "edit" if mode == FlowEditRequest.mode else mode


def song_values(tab: str, edit_method: str | None, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The song mode a tab runs (the Edit tab's method picks FlowEdit) and its request values,
    from the shared inputs (plain names) and every mode's form inputs (keyed ``"mode.field"``);
    FlowEdit also reads the Edit tab's form."""
    mode = FlowEditRequest.mode if tab == "edit" and edit_method == FlowEditRequest.mode else tab
    fields = set(SONG_TYPES[mode].field_names())
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


def with_saved_inputs(studio: Studio, data: dict[str, Any]) -> dict[str, Any]:
    """The saved request, with audio inputs pointed at the copies kept in its run folder."""
    values = dict(data["request"])
    folder = studio.store.root / str(data.get("run_id", ""))
    for field, name in data.get("inputs", {}).items():
        copy = folder / name
        if data.get("run_id") and copy.is_file():
            values[field] = str(copy)
    return values


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

    def from_settings(self, studio: Studio, data: dict[str, Any]) -> list:
        """A saved run's settings as form updates; ``gr.Error`` when they do not make a request."""
        try:
            mode = data.get("mode", "generate")
            if mode not in SONG_TYPES:
                raise ValueError(f"settings: unknown mode {mode!r}")
            restored = SONG_TYPES[mode].from_values(with_saved_inputs(studio, data))
        except ValueError as error:
            raise gr.Error(safe_message(str(error)), title="Could not apply settings") from error
        return self.updates(restored)


def _pasted_settings(text: str, upload: str | None) -> dict[str, Any]:
    source = upload or text
    if not source or not str(source).strip():
        raise gr.Error("Paste a settings.json into the box or upload one first.")
    return load_settings(source)


def wire_settings_and_links(
    studio: Studio,
    demo: gr.Blocks,
    form: SongForm,
    settings_text: gr.Code,
    settings_upload: gr.File,
    apply_btn: gr.Button,
    reuse_btn: gr.Button,
    share_btn: gr.Button,
    share_box: gr.Textbox,
) -> Callable[[str | None], list]:
    """Apply settings (the ``apply_settings`` endpoint), Reuse its plan, share links both ways.
    Returns the handler that restores a saved run by id (for History and Library)."""

    def apply_handler(text: str, upload: str | None) -> list:
        try:
            data = _pasted_settings(text, upload)
        except ValueError as error:
            raise gr.Error(safe_message(str(error)), title="Could not apply settings") from error
        return form.from_settings(studio, data)

    def restore_handler(run_id: str | None) -> list:
        if not run_id:
            raise gr.Error("Pick a run from the history first.")
        try:
            data = load_settings(studio.store.run_folder(run_id) / SETTINGS_FILE)
        except ValueError as error:
            raise gr.Error(safe_message(f"{error} (it may have been deleted)"), title="Could not restore") from error
        return form.from_settings(studio, data)

    def reuse_handler(text: str, upload: str | None) -> list:
        try:
            restored = SONG_TYPES["generate"].from_values(replay_values(_pasted_settings(text, upload)))
        except (ValueError, KeyError) as error:
            raise gr.Error(safe_message(str(error)), title="Could not reuse the plan") from error
        gr.Info("The plan's codes are in Planner → Plan to replay: Generate renders them without planning.")
        return form.updates(restored)

    reuse_btn.click(
        reuse_handler, inputs=[settings_text, settings_upload], outputs=form.targets, api_visibility="private"
    )

    # Share links: the form's settings (never audio) in the page's query string.
    def share_handler(mode: str, edit_method: str = "edit", **inputs: Any) -> str:
        mode, values = song_values(mode, edit_method, inputs)
        if "src_audio" in values and not values["src_audio"]:
            values["src_audio"] = LINK_AUDIO_STAND_IN  # a link is valid before the song is uploaded
        try:
            return share_query(SONG_TYPES[mode].from_values(values))
        except ValueError as error:
            raise gr.Error(safe_message(str(error)), title="Check the settings") from error

    share_btn.click(
        share_handler,
        inputs_kwargs={"mode": form.mode_nav, "edit_method": form.edit_method, **form.shared, **form.forms},
        outputs=share_box,
        api_visibility="private",
        queue=False,
    ).then(
        None,
        inputs=share_box,
        outputs=share_box,
        js=SHARE_LINK_JS,
    )

    def open_link(request: gr.Request) -> list:
        params = [(k, v) for k, v in request.query_params.items() if k == MODE_PARAM or k in LINK_FIELDS]
        skip = [gr.skip()] * len(form.targets)
        try:
            restored = request_from_query(params, SONG_TYPES)
        except ValueError as error:
            gr.Warning(safe_message(f"This link's settings could not be used: {error}"))
            return skip
        return skip if restored is None else form.updates(restored)

    demo.load(open_link, outputs=form.targets, api_visibility="private", queue=False)

    apply_btn.click(
        apply_handler,
        inputs=[settings_text, settings_upload],
        outputs=form.targets,
        api_name="apply_settings",
    )
    return restore_handler
