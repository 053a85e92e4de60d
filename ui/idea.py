"""Start from an idea (Generate's accordion and the ``idea`` endpoint): the planner turns one line
into the caption, length, language, bpm, key and metre, then the lyrics writer (if any) writes
the lyrics. Both run through the one run guard, on their ZeroGPU entry points on a Space.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

from modes import SongRequest
from serving.zerogpu import plan_idea_on_zerogpu
from studio import Studio
from ui.lyrics_tab import LYRICS_OPTIONS, LyricsWriter, offer_undo
from ui.runs import RUN_OPTIONS, ActiveRuns, Job, ProgressRelay, Words, guarded_run, session_key
from validation import MAX_DURATION_S, MIN_DURATION_S

if TYPE_CHECKING:
    from ui.page import Page

IDEA_FIELDS = ("prompt", "audio_duration", "vocal_language", "bpm", "keyscale", "timesignature")
MAX_IDEA_CHARS = 2_000
IDEA_WORDS = Words(
    failed="Could not plan the idea",
    unavailable="Could not plan the idea",
    crashed="Planning the idea failed",
    cancelled="Cancelled: the form is unchanged.",
)


class IdeaPlanner:
    """The idea button's and the ``idea`` endpoint's handler."""

    def __init__(self, studio: Studio, runs: ActiveRuns) -> None:
        self.studio = studio
        self.runs = runs

    def idea_handler(self, idea: str, progress: gr.Progress = gr.Progress(), request: gr.Request = None) -> tuple:
        planner = self.studio.planner
        if planner is None:
            raise gr.Error("This studio was started without a planner (--planner none).")
        if not idea or not idea.strip():
            raise gr.Error("Write a line about the song first.", title="No idea given")
        if len(idea) > MAX_IDEA_CHARS:
            raise gr.Error("idea: over the 2,000-character limit", title="Check the idea")
        idea, seed, relay = idea.strip(), SongRequest().resolve_seed().seed, ProgressRelay(progress)
        job = Job(
            lambda control: planner.plan_from_idea(idea, seed=seed, control=control),
            lambda: plan_idea_on_zerogpu(idea, seed, relay),
            words=IDEA_WORDS,
        )
        plan = guarded_run(self.runs, session_key(request), relay, job)
        assert plan is not None  # a cancel raises, in IDEA_WORDS.cancelled's words
        duration = min(max(plan.duration, MIN_DURATION_S), MAX_DURATION_S)
        return plan.caption, duration, plan.language, plan.bpm, plan.keyscale, plan.timesignature


def wire_idea(studio: Studio, runs: ActiveRuns, page: Page) -> None:
    """The idea fills Generate's form; the lyrics writer, when there is one, then writes its lyrics."""
    generate, advanced = page.songs.panels["generate"], page.shared.advanced
    if studio.lyrics is not None:
        offer_undo(page, page.songs.idea_button)  # the idea's lyrics replace what was typed
    event = page.songs.idea_button.click(
        IdeaPlanner(studio, runs).idea_handler,
        inputs=page.songs.idea,
        outputs=[generate[name] for name in IDEA_FIELDS[:3]] + [advanced[name] for name in IDEA_FIELDS[3:]],
        api_name="idea",
        **RUN_OPTIONS,
    )
    if studio.lyrics is not None:
        event.success(
            LyricsWriter(studio, runs).lyrics_for_generate,
            inputs=[page.songs.idea, generate["vocal_language"]],
            outputs=generate["lyrics"],
            api_visibility="private",
            **LYRICS_OPTIONS,
        )
