"""The takes column: a song run from the form (Generate, Retake), Vary and Cancel, the finished
run shown as its summary, players and files, and the header's model status.
"""

from __future__ import annotations

import html
import json
import secrets
from typing import TYPE_CHECKING, Any

import gradio as gr

from outputs import SETTINGS_FILE, Run, load_settings
from studio import Studio
from ui.history import add_to_history, history_choices
from ui.progress import BoardRelay, RunBoard
from ui.runs import (
    RUN_OPTIONS,
    ActiveRuns,
    SongRun,
    run_files,
    run_generate,
    run_vary,
    session_key,
)
from ui.song_form import song_values
from ui.words import in_words, literal, user_terms
from validation import MAX_BATCH, safe_message

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
    for note in (run.settings.get("sampler") or {}).get("notes", []):
        text += f"  \nSampler: {html.escape(note)}."
    loras = run.settings.get("loras")
    if loras:
        stack = ", ".join(f"{literal(item['name'])} ×{item['weight']:g}" for item in loras)
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
    """The Generate, Retake and Vary buttons' handlers: a run through the guard, kept on this
    browser's ``RunView`` (``runs.board``) while it lasts, and shown on the page."""

    def __init__(self, studio: Studio, runs: ActiveRuns) -> None:
        self.studio = studio
        self.runs = runs

    def _tracked(self, browser: Any, session: str, progress: Any, start: Any) -> Run | None:
        """``start(relay)`` with its stages written to this browser's view; failures and cancels too."""
        view = self.runs.board.begin(browser, session)
        try:
            run = start(BoardRelay(progress, view))
        except gr.Error as error:
            if view is not None:
                view.error, view.ended = safe_message(user_terms(str(error.message))), "failed"
            raise
        if view is not None:
            view.run, view.run_id, view.ended = run, run.run_id if run else "", "done" if run else "cancelled"
        return run

    def generate_handler(
        self,
        mode: str,
        history: list,
        new_seed: bool = False,
        edit_method: str = "edit",
        browser: str = "",
        progress: gr.Progress = gr.Progress(track_tqdm=True),
        request: gr.Request = None,
        **inputs: Any,
    ) -> tuple:
        mode, values = song_values(mode, edit_method, inputs)
        # keep_on_disconnect: a reloaded page finds the run on the board, then in History and the Library.
        how = SongRun(mode, new_seed=new_seed, keep_on_disconnect=True)
        session = session_key(request)
        run = self._tracked(
            browser, session, progress, lambda relay: run_generate(self.studio, self.runs, values, session, relay, how)
        )
        return self.present(run, history)

    def vary_handler(
        self,
        run_id: str,
        variance: float,
        history: list,
        browser: str = "",
        progress: gr.Progress = gr.Progress(track_tqdm=True),
        request: gr.Request = None,
    ) -> tuple:
        if not run_id:
            raise gr.Error("Generate something first: Vary makes a new take near the latest run.")
        values = {"parent_run_id": run_id, "variance": variance}
        session = session_key(request)

        def start(relay: BoardRelay) -> Run | None:
            return run_vary(self.studio, self.runs, values, session, relay, keep_on_disconnect=True)

        return self.present(self._tracked(browser, session, progress, start), history)

    def user_prompt(self, run: Run) -> str | None:
        """The prompt the user wrote for ``run``: a variation replays its parent's plan, whose
        caption the planner rewrote, so it is named after its parent's request."""
        vary = run.settings.get("vary") or {}
        if not vary.get("parent_run_id"):
            return None
        try:
            parent = load_settings(self.studio.store.run_folder(vary["parent_run_id"]) / SETTINGS_FILE)
            return str(parent["request"].get("prompt", ""))
        except (ValueError, OSError, KeyError, TypeError):
            return None

    def present(self, run: Run | None, history: list) -> tuple:
        """A finished run (or a cancelled one, ``None``) as the page's outputs (``result_outputs``)."""
        if run is None:
            return (
                "Cancelled: nothing was saved; earlier takes are untouched.",
                *[gr.skip()] * MAX_BATCH,
                *[gr.skip()] * 7,
            )
        # The players stream the MP3: a 10-minute WAV is 170 MB, too much for a phone.
        take_paths = [str(take.files["mp3"]) for take in run.takes]
        player_updates = [
            gr.update(value=take_paths[i] if i < len(take_paths) else None, visible=i < len(take_paths))
            for i in range(MAX_BATCH)
        ]
        owners = self.runs.owners
        ticket = owners.ticket(run.run_id) if owners else ""
        history = add_to_history(history, run, ticket=ticket, prompt=self.user_prompt(run))
        return (
            run_summary(run),
            *player_updates,
            gr.update(value=run_files(run), visible=True),
            json.dumps(run.settings, indent=2, ensure_ascii=False),
            status_markdown(self.studio),
            run.run_id,
            history,
            gr.Dropdown(choices=history_choices(history), value=None),
            gr.Button(interactive=True),
        )

    def watch(self, browser: str, last_run: str, history: list, request: gr.Request = None) -> tuple:
        """The timer's tick: this browser's run in one line and, once it is saved and the page
        has not shown it (a page reloaded mid-run), the run itself."""
        view = self.runs.board.get(browser)
        if view is None:
            return (gr.skip(), *[gr.skip()] * (MAX_BATCH + 8))
        line = view.line()
        run = getattr(view, "run", None)
        if view.ended != "done" or run is None or run.run_id == last_run:
            return (line, *[gr.skip()] * (MAX_BATCH + 8))
        if self.runs.owners is not None:  # the browser's id proves the run is its own
            self.runs.owners.record(session_key(request), run.run_id)
        return (line, *self.present(run, history))

    def queued(self, browser: str, request: gr.Request = None) -> tuple[str, str]:
        """On click, before the queue: this browser's id (made on its first run and kept in its
        storage, so that a reload mid-run finds the run) and a view that says the run waits."""
        browser = browser if RunBoard.valid(browser) else secrets.token_urlsafe(24)
        view = self.runs.board.begin(browser, session_key(request))
        return browser, view.line() if view is not None else ""

    def cancel(self, browser: str = "", request: gr.Request = None) -> str:
        """Cancel this session's run, or this browser's run from before a reload."""
        if self.runs.cancel(session_key(request)):
            return "Cancelling…"
        view = self.runs.board.get(browser)
        if view is not None and not view.ended and self.runs.cancel(view.session):
            return "Cancelling…"
        return "Nothing is running."


def result_outputs(page: Page) -> list:
    """What a finished run fills on the page (``SongRuns.present``'s order)."""
    takes = page.takes
    return [
        takes.summary,
        *takes.players,
        takes.downloads,
        page.settings.text,
        page.status,
        takes.last_run,
        page.history,
        page.library.history_pick,
        takes.vary,
    ]


# The finished take where the user looks: scrolled into view once the page shows a new run, unless
# it is in view or the user has moved the page since the run began (theme.THEME_HEAD, aceStudioLoop).
SCROLL_TO_TAKE_JS = "() => { window.aceStudioLoop && window.aceStudioLoop.showTake(); }"
RUN_WATCH_S = 1.0  # how often the page reads its run's progress


def wire_runs(studio: Studio, runs: ActiveRuns, page: Page) -> None:
    """Generate and Retake (the active tab's form), Vary (this session's latest run), Cancel, and
    the timer that shows this browser's run (after a reload too)."""
    handlers, takes = SongRuns(studio, runs), page.takes
    outputs = result_outputs(page)
    run_options = {**RUN_OPTIONS, "show_progress": "hidden"}  # the stage line beside the buttons says it
    queued: dict[str, Any] = dict(
        inputs=page.browser,
        outputs=[page.browser, page.shared.progress],
        api_visibility="private",
        queue=False,
        show_progress="hidden",
    )
    for button, new_seed in ((page.shared.generate, False), (page.shared.retake, True)):
        button.click(handlers.queued, **queued).then(
            in_words(handlers.generate_handler),
            inputs_kwargs={
                "mode": page.mode_nav,  # the selected mode is the nav's value
                "history": page.history,
                "new_seed": gr.State(new_seed),
                "edit_method": page.songs.edit_method,
                "browser": page.browser,
                **page.shared.advanced,
                **page.songs.form_inputs,
            },
            outputs=outputs,
            api_visibility="private",
            **run_options,
        )
    takes.vary.click(handlers.queued, **queued).then(
        in_words(handlers.vary_handler),
        inputs=[takes.last_run, takes.variance, page.history, page.browser],
        outputs=outputs,
        api_visibility="private",
        **run_options,
    )
    page.shared.cancel.click(
        handlers.cancel, inputs=page.browser, outputs=takes.summary, queue=False, api_visibility="private"
    )
    timer = gr.Timer(RUN_WATCH_S)
    timer.tick(
        handlers.watch,
        inputs=[page.browser, takes.last_run, page.history],
        outputs=[page.shared.progress, *outputs],
        api_visibility="private",
        queue=False,
        show_progress="hidden",
    )
    takes.last_run.change(None, js=SCROLL_TO_TAKE_JS, queue=False)


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
