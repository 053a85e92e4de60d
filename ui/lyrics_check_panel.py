"""The lyrics check under the take: "Check the lyrics" (each line sung, partly sung or missing,
with its word error rate, and the share of lines sung), "Repair flagged lines", and "edit by
line" (lines or sections re-made); the checked line lights up while the take plays (karaoke).

Every check and repair runs through the one run guard (``ui.runs``): the shared Cancel stops it,
its stages show as named steps. A repair is a new run (Edit), shown as the latest take and in
History. The ``check_lyrics`` and ``repair_lyrics`` endpoints take a run by name.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from backend import RunControl
from lyrics_check.check import INSTRUMENTAL_MESSAGE, STATUS_WORDS, LyricsCheck, saved_check, sung_lyrics
from lyrics_check.lrc import parse_lrc
from lyrics_check.repair import check_take, pick_choices, repair_take
from outputs import SETTINGS_FILE, Run, Take, load_settings
from serving.zerogpu import lyrics_check_on_zerogpu
from stems import StemModelUnavailableError
from studio import Studio
from ui.controls import pass_through, range_number
from ui.runs import RUN_OPTIONS, ActiveRuns, Job, Words, guarded_run, run_files, session_key
from ui.takes import SongRuns, result_outputs
from validation import MAX_BATCH, coerce_value, safe_message

if TYPE_CHECKING:
    from ui.page import Page

CHECK_WORDS = Words(
    failed="Could not check the lyrics",
    unavailable="Could not load the speech model",
    crashed="The lyrics check failed",
    disk="Could not write the lyrics check",
    cancelled="Cancelled: the take is unchanged.",
    refused=(StemModelUnavailableError,),  # Demucs' weights not at hand: its message says what to do
)
REPAIR_WORDS = Words(
    failed="Could not repair the lyrics",
    unavailable="Could not load a model for the repair",
    crashed="The repair failed",
    disk="Could not write the repaired take",
    cancelled="Cancelled: the take is unchanged; any window already re-made is kept in the Library.",
    refused=(StemModelUnavailableError,),
)
TEST_SPEECH_NOTE = "**Test speech model**: a tiny random Whisper that hears gibberish; `--speech-model` for a real one."
NO_RUN = "Generate a take first: the lyrics check reads a saved take."
# (the engine's message, the stage the page names): the check's four stages, and a repair's own.
STAGES = (
    ("Separating", "Separating vocals"),
    ("Listening", "Hearing"),
    ("Comparing", "Aligning"),
    ("Writing", "Writing"),
    ("Re-making", "Re-making"),
)
STATUS_TEXT = {status: words.strip("*") for status, words in STATUS_WORDS.items()}
# The row under the playhead, read four times a second from the take's player (Gradio's waveform player keeps
# its <audio> in a shadow root, whose media events never reach the document); ``element`` is this panel's HTML.
KARAOKE_CSS = (
    ".lyric-row.karaoke-now td { background: var(--color-accent-soft); font-weight: 700; }\n"
    ".lyrics-check-table th, .lyrics-check-table td:not(:nth-child(2)) { white-space: nowrap; }"
)
KARAOKE_JS = """
const players = (take) => {
  const box = document.getElementById('take' + take);
  if (!box) return [];
  const found = [...box.querySelectorAll('audio')];
  for (const node of box.querySelectorAll('*')) {
    if (node.shadowRoot) found.push(...node.shadowRoot.querySelectorAll('audio'));
  }
  return found;
};
const mark = () => {
  const table = element.querySelector('table[data-take]');
  if (!table) return;
  const found = players(table.dataset.take);
  const media = found.find((a) => !a.paused) || found.find((a) => a.currentSrc);
  if (!media) return;
  let now = null;
  for (const row of table.querySelectorAll('tr[data-t]')) {
    if (parseFloat(row.dataset.t) <= media.currentTime + 0.05) now = row;
  }
  for (const row of table.querySelectorAll('tr.karaoke-now')) if (row !== now) row.classList.remove('karaoke-now');
  if (now && !now.classList.contains('karaoke-now')) now.classList.add('karaoke-now');
};
setInterval(mark, 250);
"""


@dataclass
class LyricsCheckPanel:
    take: gr.Number
    check: gr.Button
    table: gr.HTML  # the run figure and one row per line, with the LRC's times for the karaoke
    lrc: gr.File
    repair: gr.Button
    pick: gr.Dropdown  # "edit by line": sections and lines
    remake: gr.Button


def build_lyrics_check(studio: Studio) -> LyricsCheckPanel:
    """The panel, placed under the takes; its buttons wake once there is a take with lyrics."""
    with gr.Accordion("Lyrics check", open=True, elem_id="lyrics-check"):
        if hears_with_test_model(studio):
            gr.Markdown(TEST_SPEECH_NOTE, elem_classes="control-help")
        with gr.Row():
            take = range_number(1, MAX_BATCH, 1, "Take", value=1, min_width=100, scale=0)
            check = gr.Button("Check the lyrics", interactive=False, elem_id="check-lyrics")
        table = gr.HTML("", elem_id="lyrics-check-table", css_template=KARAOKE_CSS, js_on_load=KARAOKE_JS)
        lrc = gr.File(label="Timed lyrics (LRC)", visible=False, interactive=False)
        repair = gr.Button("Repair flagged lines", interactive=False, elem_id="repair-lyrics")
        with gr.Row():
            pick = gr.Dropdown(
                choices=[], multiselect=True, label="Edit by line",
                info="Lines or a section (Chorus 2) to re-make; the rest stays as it is.", elem_id="edit-by-line",
            )  # fmt: skip
            remake = gr.Button("Re-make these", interactive=False, scale=0, min_width=140, elem_id="remake-lines")
    return LyricsCheckPanel(take, check, table, lrc, repair, pick, remake)


def hears_with_test_model(studio: Studio) -> bool:
    """Whether the check hears with the tiny random Whisper (beside a tiny DiT, unless told otherwise)."""
    model = str(getattr(studio.speech, "model", ""))
    return Path(model).name.startswith("tiny-whisper") or (studio.speech is None and studio.backend.spec.is_tiny)


def check_table(check: LyricsCheck) -> str:
    """The check as HTML (every text escaped): the share of lines sung, then each line with its
    status, word error rate and time; heard rows carry the saved LRC's line time (``data-t``)."""
    try:
        times = iter([line.time for line in parse_lrc(check.lrc_path.read_text(encoding="utf-8"))])
    except (OSError, ValueError):
        times = iter(())
    sung = sum(r.status == "sung" for r in check.lines)
    rows = []
    for r in check.lines:  # the LRC lists the heard lines in time order, which is line order
        at = next(times, None) if r.start is not None else None
        data = "" if at is None else f' data-t="{at:.2f}"'
        shown = "" if at is None else f"{int(at // 60)}:{at % 60:04.1f}"
        rows.append(
            f'<tr class="lyric-row lyric-{r.status}"{data}><td>{r.line.number}</td><td>{html.escape(r.line.text[:120])}'
            f"</td><td>{STATUS_TEXT[r.status]}</td><td>{r.wer:.0%}</td><td>{shown}</td></tr>"
        )
    return (
        f'<p class="lyrics-check-figure">Lines sung: <strong>{check.sung_share:.0%}</strong> ({sung} of '
        f"{len(check.lines)}) in take {check.take} of {html.escape(check.run_id)}</p>"
        f'<table class="lyrics-check-table" data-take="{check.take}"><thead><tr><th>#</th><th>Line</th>'
        f"<th>Heard</th><th>Word errors</th><th>At</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def saved_run(studio: Studio, run_id: str) -> Run:
    """A saved run as the page shows it (a repair's last Edit)."""
    folder = studio.store.run_folder(run_id)
    settings = load_settings(folder / SETTINGS_FILE)
    takes = [
        Take(i, int(take["seed"]), {fmt: folder / name for fmt, name in take["files"].items()})
        for i, take in enumerate(settings["takes"])
    ]
    return Run(run_id, folder, settings, takes)


def _idle(table: str, check: bool) -> tuple:
    """The panel with no check shown: Check awake when the take can be checked."""
    asleep = gr.Button(interactive=False)
    empty = gr.Dropdown(choices=[], value=[])
    return (
        gr.Button(interactive=check),
        table,
        gr.File(value=None, visible=False),
        gr.Button(interactive=check),
        empty,
        asleep,
    )


class StageRelay:
    """The engine's ``(fraction, message)`` to ``gr.Progress`` as a named stage."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress

    def __call__(self, fraction: float, message: str) -> None:
        stage = next((label for start, label in STAGES if message.startswith(start)), None)
        self.progress(fraction, desc=message if stage is None else f"{stage}: {message}")


class LyricsCheckRuns:
    """The panel's and the endpoints' handlers: a check or repair through the run guard."""

    def __init__(self, studio: Studio, runs: ActiveRuns) -> None:
        self.studio = studio
        self.runs = runs

    def _take(self, session: str, run_id: Any, take: Any) -> tuple[str, int]:
        if not run_id:
            raise gr.Error(NO_RUN, title="No take yet")
        try:
            number = 1 if take in (None, "") else coerce_value("take", int, take)
            self.runs.check_owner(session, str(run_id))
            self.studio.store.run_folder(str(run_id))
        except ValueError as error:
            raise gr.Error(safe_message(str(error)), title=CHECK_WORDS.failed) from error
        return str(run_id), number

    def check(self, run_id: Any, take: Any, progress: Any, request: gr.Request | None) -> LyricsCheck:
        session = session_key(request)
        run_id, number = self._take(session, run_id, take)
        relay = StageRelay(progress)
        job = Job(
            lambda control: check_take(self.studio, run_id, number, control),
            lambda: lyrics_check_on_zerogpu(run_id, number, progress=relay),
            words=CHECK_WORDS,
        )
        result = guarded_run(self.runs, session, relay, job)
        assert result is not None  # a cancel raises, in CHECK_WORDS.cancelled's words
        return result

    def repair(self, run_id: Any, take: Any, picks: list[str] | None, progress: Any, request: gr.Request | None):
        session = session_key(request)
        run_id, number = self._take(session, run_id, take)

        def work(control: RunControl) -> LyricsCheck:
            return repair_take(self.studio, run_id, number, control, picks)[1]

        relay = StageRelay(progress)

        def on_gpu() -> LyricsCheck:
            return lyrics_check_on_zerogpu(run_id, number, picks, repair=True, progress=relay)[1]

        result = guarded_run(self.runs, session, relay, Job(work, on_gpu, words=REPAIR_WORDS))
        assert result is not None  # a cancel raises, in REPAIR_WORDS.cancelled's words
        if self.runs.owners is not None:
            self.runs.owners.record(session, result.run_id)
        return saved_run(self.studio, result.run_id), result

    # ---- the page

    def view(self, run_id: Any, take: Any) -> tuple:
        """The panel for the latest run's take: its saved check if it has one; the buttons awake
        when it has lyrics; an instrumental take says so instead."""
        try:
            folder = self.studio.store.run_folder(str(run_id))
            settings = load_settings(folder / SETTINGS_FILE)
            number = max(1, min(int(take or 1), len(settings["takes"])))
            sung_lyrics(settings)
        except (ValueError, TypeError, KeyError) as error:
            note = INSTRUMENTAL_MESSAGE if str(error) == INSTRUMENTAL_MESSAGE else ""
            return gr.skip(), *_idle(f"<p>{html.escape(note)}</p>" if note else "", check=False)
        check = saved_check(self.studio.store, str(run_id), number)
        if check is None:
            return number, *_idle("", check=True)
        flagged = any(r.status != "sung" for r in check.lines)
        return (
            number,
            gr.Button(interactive=True),
            check_table(check),
            gr.File(value=str(check.lrc_path), visible=True),
            gr.Button(interactive=flagged),
            gr.Dropdown(choices=pick_choices(check.lines), value=[]),
            gr.Button(interactive=True),
        )

    def check_handler(self, run_id: str, take: Any, progress: gr.Progress = gr.Progress(), request: gr.Request = None):
        self.check(run_id, take, progress, request)
        return self.view(run_id, take)

    def repair_handler(
        self, run_id: str, take: Any, history: list, picks: list[str] | None = None,
        progress: gr.Progress = gr.Progress(), request: gr.Request = None,
    ) -> tuple:  # fmt: skip
        """Repair (``picks`` None) or re-make the picked lines; the new take shows as the latest run."""
        run, _ = self.repair(run_id, take, picks, progress, request)
        return SongRuns(self.studio, self.runs).present(run, history)

    def remake_handler(self, run_id: str, take: Any, history: list, picks: list[str] | None, **kwargs: Any) -> tuple:
        return self.repair_handler(run_id, take, history, list(picks or []), **kwargs)

    # ---- the endpoints

    def check_api(
        self, run_id: str, take: int = 1, progress: gr.Progress = gr.Progress(), request: gr.Request = None
    ) -> tuple[str, dict]:
        """Check what a saved take sings against its lyrics: each line sung, partly sung or missing.

        Args:
            run_id: The saved run (settings["run_id"] of a run with lyrics).
            take: Which of its takes, from 1.

        Returns:
            The timed lyrics (.lrc, saved in the run and embedded in the take's tags) and the check:
            sung_share (the share of lines sung) and per line its status, word error rate and times.
        """
        check = self.check(run_id, take, progress, request)
        return str(check.lrc_path), check.record()

    def repair_api(
        self, run_id: str, take: int = 1, lines: str | None = None,
        progress: gr.Progress = gr.Progress(), request: gr.Request = None,
    ) -> tuple[list[str], dict]:  # fmt: skip
        """Re-make the lines a saved take skipped or half sang (or the lines you name) and check again;
        everything outside their time windows stays bit-identical. Checks the take first if it was not.

        Args:
            run_id: The saved run (settings["run_id"] of a run with lyrics).
            take: Which of its takes, from 1.
            lines: Empty for the flagged lines; else line numbers or sections, comma-separated ("3, Chorus 2").

        Returns:
            The new run's files (an Edit run: WAV, FLAC, MP3, the .lrc, settings.json) and its check.
        """
        picks = [part for part in re.split(r"[,\n]", str(lines or "")[:4000]) if part.strip()] or None
        run, check = self.repair(run_id, take, picks, progress, request)
        return [*run_files(run), str(check.lrc_path)], check.record()


def wire_lyrics_check(studio: Studio, runs: ActiveRuns, page: Page) -> None:
    """The panel's buttons on this session's latest run, the panel kept in step with that run,
    and the ``check_lyrics`` and ``repair_lyrics`` endpoints."""
    panel, handlers = page.lyrics_check, LyricsCheckRuns(studio, runs)
    shown = [panel.take, panel.check, panel.table, panel.lrc, panel.repair, panel.pick, panel.remake]
    take = pass_through(panel.take)
    where = {"run_id": page.takes.last_run, "take": take}
    for trigger in (page.takes.last_run.change, panel.take.change):
        trigger(handlers.view, inputs_kwargs=where, outputs=shown, api_visibility="private", queue=False)
    options = {**RUN_OPTIONS, "api_visibility": "private"}
    panel.check.click(
        handlers.check_handler, inputs_kwargs=where, outputs=shown, show_progress_on=panel.table, **options
    )
    remade = {**where, "history": page.history}
    for button, handler, inputs in (
        (panel.repair, handlers.repair_handler, remade),
        (panel.remake, handlers.remake_handler, {**remade, "picks": panel.pick}),
    ):  # the new take shows as the latest run; its stages show in the panel
        button.click(
            handler, inputs_kwargs=inputs, outputs=result_outputs(page), show_progress_on=panel.table, **options
        )
    with gr.Column(visible=False):
        run_id, number, lines = gr.Textbox(), gr.Number(value=1, precision=0), gr.Textbox()
        lrc, record, files = gr.File(), gr.JSON(), gr.File(file_count="multiple")
    gr.Button(visible=False).click(
        handlers.check_api, inputs_kwargs={"run_id": run_id, "take": number}, outputs=[lrc, record],
        api_name="check_lyrics", **RUN_OPTIONS,
    )  # fmt: skip
    gr.Button(visible=False).click(
        handlers.repair_api, inputs_kwargs={"run_id": run_id, "take": number, "lines": lines},
        outputs=[files, record], api_name="repair_lyrics", **RUN_OPTIONS,
    )  # fmt: skip
