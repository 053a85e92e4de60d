"""The takes column: a song run from the form (Generate, Retake), Vary and Cancel, the finished
run shown as its summary, players and files, and the header's model status.
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any

import gradio as gr

from outputs import Run
from studio import Studio
from ui.history import add_to_history, history_choices
from ui.runs import (
    RUN_OPTIONS,
    ActiveRuns,
    Canceller,
    ProgressRelay,
    SongRun,
    run_files,
    run_generate,
    run_vary,
    session_key,
)
from ui.song_form import song_values
from validation import MAX_BATCH

if TYPE_CHECKING:
    from ui.page import Page


def status_markdown(studio: Studio) -> str:
    return f"`{html.escape(studio.backend.status())}`"


def run_summary(run: Run) -> str:
    """A finished run in words: its takes and seeds, and what planning, LoRAs, Vary and mastering did."""
    seeds = ", ".join(str(take.seed) for take in run.takes)
    seconds = run.settings["timings_s"]["generate"]
    text = (
        f"Saved **{html.escape(run.run_id)}**: {run.settings['mode']}, {len(run.takes)} take(s), "
        f"{run.settings['output']['duration_s']:.1f} s, seed {seeds}, {seconds:.1f} s to generate."
    )
    plan = run.settings.get("plan")
    if plan:
        stats = plan.get("planner") or {}
        lengths = ", ".join(f"{take['duration']} s" for take in plan.get("takes") or [plan])
        codes = sum(len(take["codes"]) for take in plan.get("takes") or [plan])
        text += (
            f"  \nPlanned: {plan['bpm']} bpm, {html.escape(plan['keyscale'])}, {plan['timesignature']} beats per bar, "
            f"language {html.escape(plan['language'])}, length {lengths}; {codes} audio codes in "
            f"{stats.get('seconds', 0):.1f} s ({stats.get('tokens_per_second') or 0:.0f} tokens/s). "
            f"Caption: {html.escape(plan['caption'])}"
        )
    loras = run.settings.get("loras")
    if loras:
        stack = ", ".join(f"{html.escape(item['name'])} ×{item['weight']:g}" for item in loras)
        text += f"  \nLoRAs: {stack}."
    vary = run.settings.get("vary")
    if vary:
        text += f"  \nA variation of {html.escape(vary['parent_run_id'])} at variance {vary['variance']:g}."
    for i, figures in enumerate(run.settings.get("mastering") or []):
        before, after = figures["before"], figures["after"]
        text += (
            f"  \nTake {i + 1} mastered: {_figure(before['lufs'])} → {_figure(after['lufs'])} LUFS, "
            f"true peak {_figure(before['true_peak_dbtp'])} → {_figure(after['true_peak_dbtp'])} dBTP."
        )
    return text


def _figure(value: float | None) -> str:
    """A decibel figure; silence has none (-inf, saved as null)."""
    return "–∞" if value is None else f"{value:.1f}"


class SongRuns:
    """The Generate, Retake and Vary buttons' handlers: a run through the guard, shown on the page."""

    def __init__(self, studio: Studio, runs: ActiveRuns) -> None:
        self.studio = studio
        self.runs = runs

    def generate_handler(
        self,
        mode: str,
        history: list,
        new_seed: bool = False,
        edit_method: str = "edit",
        progress: gr.Progress = gr.Progress(track_tqdm=True),
        request: gr.Request = None,
        **inputs: Any,
    ) -> tuple:
        mode, values = song_values(mode, edit_method, inputs)
        # keep_on_disconnect: a reloaded page finds the finished run in the Library.
        how = SongRun(mode, new_seed=new_seed, keep_on_disconnect=True)
        run = run_generate(self.studio, self.runs, values, session_key(request), ProgressRelay(progress), how)
        return self.present(run, history)

    def vary_handler(
        self,
        run_id: str,
        variance: float,
        history: list,
        progress: gr.Progress = gr.Progress(track_tqdm=True),
        request: gr.Request = None,
    ) -> tuple:
        if not run_id:
            raise gr.Error("Generate something first: Vary makes a new take near the latest run.")
        values = {"parent_run_id": run_id, "variance": variance}
        session, relay = session_key(request), ProgressRelay(progress)
        run = run_vary(self.studio, self.runs, values, session, relay, keep_on_disconnect=True)
        return self.present(run, history)

    def present(self, run: Run | None, history: list) -> tuple:
        """A finished run (or a cancelled one, ``None``) as the page's outputs (``Takes.outputs``)."""
        if run is None:
            return (
                "Cancelled: nothing was saved; earlier takes are untouched.",
                *[gr.skip()] * MAX_BATCH,
                gr.skip(),
                gr.skip(),
                status_markdown(self.studio),
                gr.skip(),
                gr.skip(),
                gr.skip(),
            )
        # The players stream the MP3: a 10-minute WAV is 170 MB, too much for a phone.
        take_paths = [str(take.files["mp3"]) for take in run.takes]
        player_updates = [
            gr.update(value=take_paths[i] if i < len(take_paths) else None, visible=i < len(take_paths))
            for i in range(MAX_BATCH)
        ]
        owners = self.runs.owners
        history = add_to_history(history, run, ticket=owners.ticket(run.run_id) if owners else "")
        return (
            run_summary(run),
            *player_updates,
            run_files(run),
            json.dumps(run.settings, indent=2, ensure_ascii=False),
            status_markdown(self.studio),
            run.run_id,
            history,
            gr.Dropdown(choices=history_choices(history), value=None),
        )


def wire_runs(studio: Studio, runs: ActiveRuns, page: Page) -> None:
    """Generate and Retake (the active tab's form), Vary (this session's latest run), Cancel."""
    handlers, takes = SongRuns(studio, runs), page.takes
    outputs = [
        takes.summary,
        *takes.players,
        takes.downloads,
        page.settings.text,
        page.status,
        takes.last_run,
        page.history,
        page.library.history_pick,
    ]
    for button, new_seed in ((page.shared.generate, False), (page.shared.retake, True)):
        button.click(
            handlers.generate_handler,
            inputs_kwargs={
                "mode": page.mode_nav,  # the selected mode is the nav's value
                "history": page.history,
                "new_seed": gr.State(new_seed),
                "edit_method": page.songs.edit_method,
                **page.shared.advanced,
                **page.songs.form_inputs,
            },
            outputs=outputs,
            api_visibility="private",
            **RUN_OPTIONS,
        )
    takes.vary.click(
        handlers.vary_handler,
        inputs=[takes.last_run, takes.variance, page.history],
        outputs=outputs,
        api_visibility="private",
        **RUN_OPTIONS,
    )
    page.shared.cancel.click(
        Canceller(runs).cancel_handler, outputs=takes.summary, queue=False, api_visibility="private"
    )


class StatusRefresh:
    """While the model loads, the header refreshes itself; the timer stops once it is ready."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio

    def refresh_status(self) -> tuple[str, gr.Timer]:
        settled = self.studio.backend.state in ("ready", "load failed")
        return status_markdown(self.studio), gr.Timer(active=not settled)


def wire_status(studio: Studio, runs: ActiveRuns, page: Page) -> None:
    """The header's model status, refreshed every 2 s until the model has loaded (or failed to)."""
    timer = gr.Timer(2.0, active=not studio.backend.is_loaded)
    refresh = StatusRefresh(studio).refresh_status
    timer.tick(refresh, outputs=[page.status, timer], api_visibility="private", queue=False)
    page.demo.load(refresh, outputs=[page.status, timer], api_visibility="private", queue=False)
