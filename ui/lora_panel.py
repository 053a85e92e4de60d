"""The LoRA panel: the helpers around the ``loras`` field (pick a known LoRA, add a file, fetch a
preset) and their events. Loading adapters is model work and goes through the one run guard;
a file is checked on its own slot (``LORA_FILE_CONCURRENCY_ID``), off the GPU slot and before
the run lock is taken (``Studio.add_lora``), so an upload never queues behind a song.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from lora.bundle import read_upload
from lora.presets import fetch_preset, load_presets
from studio import Studio
from theme import EMPTY_NUMBER_CLASS
from tooltips import TOOLTIPS
from ui.controls import range_number
from ui.runs import GPU_EVENT_TIME_LIMIT_S, RUN_OPTIONS, ActiveRuns, Job, ProgressRelay, Words, guarded_run, session_key
from ui.words import literal
from validation import MAX_LORA_WEIGHT, check_range, parse_lora_stack, safe_message

if TYPE_CHECKING:
    from ui.page import Page

LORA_FILE_CONCURRENCY_ID = "lora_file"
LORA_FILE_CONCURRENCY = 2  # files checked at once; each check is bounded by lora_check's limits
# Not the GPU slot: an upload being checked must not queue behind a song, nor a song behind it.
LORA_FILE_OPTIONS: dict[str, Any] = dict(
    concurrency_id=LORA_FILE_CONCURRENCY_ID,
    concurrency_limit=LORA_FILE_CONCURRENCY,
    time_limit=GPU_EVENT_TIME_LIMIT_S,  # loading the adapter waits for the run in progress
)
LIST_WORDS = Words(failed="Could not list the LoRAs", crashed="Listing the LoRAs failed")
FILE_WORDS = Words(failed="LoRA refused", unavailable="LoRA refused", crashed="Adding the LoRA failed")
PRESET_WORDS = Words(
    failed="Could not add the preset",
    unavailable="Could not add the preset",
    crashed="Adding the preset failed",
    disk="Could not download or keep the preset",
)


@dataclass
class LoraPanel:
    """Top-down in the order of use: pick a LoRA, set its weight, add it; the stack below (the
    ``loras`` field, built by the caller) with its names; then where new LoRAs come from."""

    refresh: gr.Button
    pick: gr.Dropdown
    weight: gr.Number
    add_to_stack: gr.Button
    stack_names: gr.Markdown
    clear: gr.Button
    upload: gr.File
    alpha: gr.Number
    name: gr.Textbox
    add_file: gr.Button
    preset: gr.Dropdown
    fetch: gr.Button
    note: gr.Markdown


def build_lora_panel(
    preset_names: list[str], build_stack: Callable[[], dict[str, Any]]
) -> tuple[LoraPanel, dict[str, Any]]:
    """The LoRA panel; ``build_stack`` places the stack's own fields (``loras``, its trigger
    words) after the picker, and what it built is returned beside the panel."""
    with gr.Row():
        pick = gr.Dropdown(choices=[], label="1. Pick one of your LoRAs", info=TOOLTIPS["lora_pick"], scale=3)
        refresh = gr.Button("Show my LoRAs", variant="secondary", scale=1, min_width=140)
    weight = range_number(0, MAX_LORA_WEIGHT, 0.05, label="2. Its weight", value=1.0)
    add_to_stack = gr.Button("3. Add to the stack", variant="secondary")
    stack_names = gr.Markdown(describe_stack("", {}), elem_classes="lora-stack-names")
    stack = build_stack()
    clear = gr.Button("Clear the stack", variant="stop", size="sm")
    gr.Markdown("**More LoRAs**: a file of your own or a preset.", elem_classes="control-help")
    upload = gr.File(
        label="Add a LoRA: its .safetensors with adapter_config.json, or the folder as a .zip",
        file_types=[".safetensors", ".json", ".zip"],
        file_count="multiple",
        type="filepath",
    )
    with gr.Row():
        alpha = gr.Number(  # 0 is unset too (``alpha or None``): shown empty (theme.EMPTY_NUMBER_CLASS)
            value=None, label="Its lora_alpha (optional)", info=TOOLTIPS["lora_alpha"], scale=2,
            elem_classes=EMPTY_NUMBER_CLASS,
        )  # fmt: skip
        name = gr.Textbox(label="Its name (optional)", scale=3)
        add_file = gr.Button("Check and add", variant="secondary", scale=1)
    with gr.Row():
        preset = gr.Dropdown(choices=preset_names, value=None, label="Presets", info=TOOLTIPS["lora_preset"], scale=3)
        fetch = gr.Button("Download", variant="secondary", scale=1)
    note = gr.Markdown("", elem_classes="control-help")
    panel = LoraPanel(
        refresh, pick, weight, add_to_stack, stack_names, clear, upload, alpha, name, add_file, preset, fetch, note
    )
    return panel, stack


def describe_stack(stack: str, names: dict[str, str]) -> str:
    """The stack as a numbered list of names (``names`` maps a key to its LoRA's name; a key
    not in it is shown as written), top to bottom in the order it applies."""
    try:
        items = parse_lora_stack(stack or "")
    except ValueError as error:
        return safe_message(str(error))
    if not items:
        return "The stack is empty: no LoRA, the model as it is."
    lines = [f"{i}. **{literal(names.get(key, key))}** × {weight:g}" for i, (key, weight) in enumerate(items, 1)]
    return "The stack, applied top to bottom:\n\n" + "\n".join(lines)


def with_lora(stack: str, key: str | None, weight: float) -> str:
    """``stack`` with ``key`` at ``weight`` (replacing its earlier weight, else appended)."""
    if not key:
        raise ValueError("Pick one of your LoRAs first (Show my LoRAs lists them).")
    if not isinstance(weight, (int, float)) or isinstance(weight, bool):
        raise ValueError(f"Its weight: give a number between 0 and {MAX_LORA_WEIGHT:g}")
    check_range("Its weight", weight, 0, MAX_LORA_WEIGHT)
    items = [item.strip() for item in (stack or "").split(",") if item.strip()]
    items = [item for item in items if item.rpartition(":")[0].strip() != key and item != key]
    return ", ".join([*items, f"{key}:{weight:g}"])


class LoraHandlers:
    """The LoRA panel's handlers; the studio loads adapters onto the DiT in this process (a ZeroGPU
    worker reloads a run's LoRAs from the store by their sha256)."""

    def __init__(self, studio: Studio, runs: ActiveRuns) -> None:
        self.studio = studio
        self.runs = runs
        # Key -> name of every LoRA listed so far (the process's LoRAs are shared by every
        # visitor already); the stack's view reads it without touching the model.
        self.names: dict[str, str] = {}

    def _guarded(self, request: gr.Request | None, job: Job, progress: Any = None) -> Any:
        return guarded_run(self.runs, session_key(request), progress, job)

    def _choices(self, selected: str | None = None) -> gr.Dropdown:
        entries = self.studio.known_loras()
        # A name is unique among the loaded LoRAs (LoraStack refuses a second); the value stays
        # the sha256 prefix, which also finds a LoRA kept from an earlier session.
        self.names.update({entry.sha256[:16]: entry.name for entry in entries})
        return gr.Dropdown(choices=[(entry.name, entry.sha256[:16]) for entry in entries], value=selected)

    def stack_names(self, stack: str) -> str:
        return describe_stack(stack, self.names)

    def lora_choices(self, request: gr.Request = None) -> gr.Dropdown:
        return self._guarded(request, Job(lambda control: self._choices(), words=LIST_WORDS))

    def add_lora_file(
        self, paths: list[str] | str | None, name: str, alpha: float | None = None, request: gr.Request = None
    ) -> tuple:
        # A plain function: Gradio runs it in its thread pool, so checking a file never blocks
        # the event loop; the file is checked before the run lock is taken (Studio.add_lora).
        if not paths:
            raise gr.Error("Choose a .safetensors file (with its adapter_config.json) or a .zip first.")
        files = [paths] if isinstance(paths, str) else list(paths)

        def work(control: Any) -> tuple:
            with tempfile.TemporaryDirectory(prefix="lora-") as workdir:
                upload = read_upload(files, alpha or None, Path(workdir))  # a cleared Number sends 0
                entry = self.studio.add_lora(
                    upload.weights, name=name.strip() or None, adapter_config=upload.adapter_config
                )
            return self._choices(entry.sha256[:16]), added_note(entry)

        # Beside a song on its own slot: not registered for Cancel, which stays with the song.
        return self._guarded(request, Job(work, words=FILE_WORDS, cancellable=False))

    def fetch_lora_preset(
        self, name: str | None, progress: gr.Progress = gr.Progress(), request: gr.Request = None
    ) -> tuple:
        if not name:
            raise gr.Error("Pick a preset first.")

        def work(control: Any) -> tuple:
            preset = next((preset for preset in load_presets() if preset.name == name), None)
            if preset is None:
                raise ValueError(f"preset: no preset called {name[:80]!r}")
            path = fetch_preset(name, ProgressRelay(progress))
            entry = self.studio.add_lora(path, name=preset.name, trigger_words=preset.trigger_words)
            note = f"Added **{literal(entry.name)}**; suggested weight {preset.weight:g}."
            return self._choices(entry.sha256[:16]), note

        return self._guarded(request, Job(work, words=PRESET_WORDS), ProgressRelay(progress))


def added_note(entry: Any) -> str:
    """What the page says of an added LoRA: its size, and the strength it plays at."""
    info = entry.info
    note = f"Added **{literal(entry.name)}** (rank {info.rank}, {info.modules} layers)"
    if info.alpha is None:
        return (
            f"{note}. Its alpha is unknown, so 1 is assumed (alpha = rank): an official LoRA may play weaker "
            "than trained. Add its adapter_config.json too, or type its lora_alpha."
        )
    return f"{note}, alpha {info.alpha:g}: it plays at {info.alpha / info.rank:g}x, as trained."


def add_to_stack(stack: str, key: str | None, weight: float) -> str:
    try:
        return with_lora(stack, key, weight)
    except ValueError as error:
        raise gr.Error(safe_message(str(error)), title="Nothing to add") from error


def wire_lora(studio: Studio, runs: ActiveRuns, page: Page) -> None:
    """Pick a known LoRA into the stack, add a file, fetch a preset; the stack itself is the ``loras`` field."""
    panel, loras = page.shared.lora, page.shared.advanced["loras"]
    handlers = LoraHandlers(studio, runs)
    panel.refresh.click(handlers.lora_choices, outputs=panel.pick, api_visibility="private", **RUN_OPTIONS)
    # Queued: Gradio drops the message of an unqueued event's error.
    panel.add_to_stack.click(
        add_to_stack, inputs=[loras, panel.pick, panel.weight], outputs=loras, api_visibility="private"
    )
    loras.change(
        handlers.stack_names,
        inputs=loras,
        outputs=panel.stack_names,
        api_visibility="private",
        queue=False,
        show_progress="hidden",
    )
    panel.clear.click(lambda: "", outputs=loras, api_visibility="private", queue=False)
    panel.add_file.click(
        handlers.add_lora_file,
        inputs=[panel.upload, panel.name, panel.alpha],
        outputs=[panel.pick, panel.note],
        api_visibility="private",
        **LORA_FILE_OPTIONS,
    )
    panel.fetch.click(
        handlers.fetch_lora_preset,
        inputs=panel.preset,
        outputs=[panel.pick, panel.note],
        api_visibility="private",
        **RUN_OPTIONS,
    )
