"""The one run guard: Start from an idea and Stems go through it like a song run does, to their
ZeroGPU entry points on a Space, with the engine's exceptions worded for the page."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pytest

from backend import Cancelled, ModelUnavailableError, RunControl
from modes import GenerateRequest
from outputs import OutputStore
from serving import zerogpu
from studio import Studio
from ui.idea import IdeaPlanner
from ui.library import stems_handler
from ui.runs import ActiveRuns

STEM_MODEL = "demucs_unittest"


class FailingPlanner:
    """A planner that fails as ``error`` says: the faults the guard must word."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def plan_from_idea(self, idea: str, *, seed: int, control: RunControl | None = None, **known: Any) -> Any:
        raise self.error


@pytest.fixture
def zerogpu_space(monkeypatch):
    """A ZeroGPU Space as the studio sees it (its environment); the studio attached is set per test."""
    monkeypatch.setenv("SPACE_ID", "someone/ace-music-studio")
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    yield
    zerogpu.attach(None)


def test_on_zerogpu_the_idea_is_planned_by_its_gpu_entry_point(zerogpu_space, tiny_backend, tiny_planner, tmp_path):
    # The page's own planner fails: only the GPU entry point (the attached studio's planner) can answer.
    page = Studio(backend=tiny_backend, store=OutputStore(tmp_path / "page"), planner=FailingPlanner(RuntimeError()))
    zerogpu.attach(Studio(backend=tiny_backend, store=OutputStore(tmp_path / "gpu"), planner=tiny_planner))
    prompt, duration, language, bpm, keyscale, timesignature = IdeaPlanner(page, ActiveRuns()).idea_handler(
        "a melancholic bossa nova about leaving Lisbon"
    )
    assert prompt.strip() and 10 <= duration <= 600 and 30 <= bpm <= 300 and language
    assert keyscale.split()[-1] in ("major", "minor") and timesignature in ("2", "3", "4", "6")


def test_on_zerogpu_stems_are_split_by_their_gpu_entry_point(zerogpu_space, tiny_backend, tmp_path):
    # The run exists only in the attached (GPU worker's) studio: the page's own store has none.
    worker = Studio(backend=tiny_backend, store=OutputStore(tmp_path / "gpu"))
    run = worker.generate(GenerateRequest(prompt="x", audio_duration=10, seed=1, num_inference_steps=2), RunControl())
    zerogpu.attach(worker)
    page = Studio(backend=tiny_backend, store=OutputStore(tmp_path / "page"))
    files = stems_handler(page, ActiveRuns())(run.run_id, 1, STEM_MODEL)
    names = sorted(name.rsplit("/", 1)[-1] for name in files)
    assert names == ["bass.flac", "drums.flac", "other.flac", f"stems-take1-{STEM_MODEL}.zip", "vocals.flac"]
    assert all(name.startswith(str(run.folder)) for name in files)


def test_off_zerogpu_stems_run_here_and_a_missing_run_is_worded(studio):
    with pytest.raises(gr.Error) as error:
        stems_handler(studio, ActiveRuns())("no-such-run", 1, STEM_MODEL)
    assert error.value.title == "Could not split into stems"
    assert error.value.message.startswith("run_id: no run called")


@pytest.mark.parametrize(
    ("fault", "title", "message"),
    [
        (Cancelled(), None, "Cancelled: the form is unchanged."),
        (ValueError("bpm: must be <b>30</b> or more"), "Could not plan the idea", "bpm: must be &lt;b&gt;30"),
        (ModelUnavailableError("no planner weights"), "Could not plan the idea", "no planner weights"),
        (RuntimeError("CUDA out of memory"), "Model error", "Planning the idea failed: CUDA out of memory"),
    ],
)
def test_the_idea_handlers_faults_are_worded_by_the_guard(tiny_backend, tmp_path, fault, title, message):
    page = Studio(backend=tiny_backend, store=OutputStore(tmp_path / "page"), planner=FailingPlanner(fault))
    runs = ActiveRuns()
    with pytest.raises(gr.Error) as error:
        IdeaPlanner(page, runs).idea_handler("rain on a tin roof")
    assert error.value.message.startswith(message)
    assert title is None or error.value.title == title
    assert runs.cancel("anonymous") is False  # the session's run was let go


def test_on_zerogpu_a_worker_without_a_studio_is_worded_not_raised_raw(zerogpu_space, tiny_backend, tmp_path):
    zerogpu.attach(None)
    page = Studio(backend=tiny_backend, store=OutputStore(tmp_path / "page"), planner=FailingPlanner(RuntimeError()))
    with pytest.raises(gr.Error) as error:
        IdeaPlanner(page, ActiveRuns()).idea_handler("rain on a tin roof")
    assert error.value.title == "Model error"
    assert "zerogpu.attach(studio) was not called" in error.value.message
