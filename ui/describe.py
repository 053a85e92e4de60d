"""Describe this song (Cover, Extend and Edit, and the ``describe`` endpoint): the planner reads the
uploaded song and fills the form with its caption, lyrics, language, bpm, key and metre
(``lm.describe``). It runs through the one run guard, on its ZeroGPU entry point on a Space.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from serving.zerogpu import describe_on_zerogpu
from studio import Studio
from ui.runs import RUN_OPTIONS, ActiveRuns, Job, ProgressRelay, Words, guarded_run, session_key
from validation import RANDOM_SEED

if TYPE_CHECKING:
    from lm.describe import Description
    from ui.page import Page

DESCRIBE_MODES = ("cover", "extend", "edit")
# The form's fields it fills: the tab's own, then the shared panel's (Advanced).
TAB_FIELDS = ("prompt", "lyrics", "vocal_language")
SHARED_FIELDS = ("bpm", "keyscale", "timesignature")
DESCRIBE_WORDS = Words(
    failed="Could not describe the song",
    unavailable="Could not describe the song",
    crashed="Describing the song failed",
    cancelled="Cancelled: the form is unchanged.",
)


class SongDescriber:
    """The Describe buttons' and the ``describe`` endpoint's handler."""

    def __init__(self, studio: Studio, runs: ActiveRuns) -> None:
        self.studio = studio
        self.runs = runs

    def describe(
        self, src_audio: str | None, seed: int | None, progress: Any, request: gr.Request | None
    ) -> Description:
        if self.studio.planner is None:
            raise gr.Error("This studio was started without a planner (--planner none).")
        if not src_audio:
            raise gr.Error("Upload the song to describe first.", title="No song given")
        seed = None if seed in (None, RANDOM_SEED) else int(seed)
        relay = ProgressRelay(progress)
        job = Job(
            lambda control: self.studio.describe(src_audio, control, seed=seed),
            lambda: describe_on_zerogpu(src_audio, seed, relay),
            words=DESCRIBE_WORDS,
        )
        description = guarded_run(self.runs, session_key(request), relay, job)
        assert description is not None  # a cancel raises, in DESCRIBE_WORDS.cancelled's words
        return description

    def fill_form(self, src_audio: str | None, progress: gr.Progress = gr.Progress(), request: gr.Request = None):
        values = self.describe(src_audio, None, progress, request).form_values()
        return tuple(values[name] for name in (*TAB_FIELDS, *SHARED_FIELDS))

    def describe_api(
        self,
        src_audio: str,
        seed: int | None = None,
        progress: gr.Progress = gr.Progress(),
        request: gr.Request = None,
    ) -> dict[str, Any]:
        """Describe an uploaded song: the 5 Hz LM reads it and writes its caption, lyrics, bpm, key,
        time signature and vocal language, in the names the song endpoints take.

        Args:
            src_audio: The song to describe (WAV, FLAC, MP3 or OGG; up to 10 minutes).
            seed: The LM's sampling seed; empty or -1 for a random one.

        Returns:
            prompt, lyrics, bpm, keyscale, timesignature and vocal_language (ready for /cover, /extend
            or /edit), plus the LM's guess at the length (duration, seconds) and how many codes it read.
        """
        description = self.describe(src_audio, seed, progress, request)
        return {**description.form_values(), "duration": description.duration, "codes": description.codes}


def wire_describe(studio: Studio, runs: ActiveRuns, page: Page) -> None:
    """Each rework tab's Describe button fills that tab's form; ``describe`` is the named endpoint."""
    describer = SongDescriber(studio, runs)
    advanced = page.shared.advanced
    for mode, button in page.songs.describe.items():
        panel = page.songs.panels[mode]
        button.click(
            describer.fill_form,
            inputs=panel["src_audio"],
            outputs=[panel[name] for name in TAB_FIELDS] + [advanced[name] for name in SHARED_FIELDS],
            api_visibility="private",
            **RUN_OPTIONS,
        )
    with gr.Column(visible=False):
        song = gr.Audio(type="filepath", visible=False)
        seed = gr.Number(value=None, visible=False)
        result = gr.JSON(visible=False)
    gr.Button(visible=False).click(
        describer.describe_api,
        inputs_kwargs={"src_audio": song, "seed": seed},
        outputs=result,
        api_name="describe",
        **RUN_OPTIONS,
    )
