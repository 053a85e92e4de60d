"""Think: the planner wired into Generate, its plan saved, and "reuse plan" replaying it exactly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf

from backend import Cancelled, ModelUnavailableError, RunControl
from modes import GenerateRequest
from studio import replay_values
from validation import KEYSCALES, VOCAL_LANGUAGES

LYRICS = "[verse]\nhello rain on the window\n[chorus]\nsing it again"


def thinking_request(**changes) -> GenerateRequest:
    values = dict(
        prompt="calm piano ballad",
        lyrics=LYRICS,
        audio_duration=10,
        num_inference_steps=2,
        seed=11,
        think=True,
        bpm=97,
        wav_bit_depth="32f",
    )
    return GenerateRequest(**{**values, **changes})


def read_take(run) -> np.ndarray:
    return sf.read(run.takes[0].files["wav"], dtype="float32")[0]


def test_think_plans_renders_and_saves_the_plan(thinking_studio):
    run = thinking_studio.generate(thinking_request(), RunControl())
    plan = run.settings["plan"]
    assert plan["bpm"] == 97  # the user's value is kept
    assert plan["keyscale"] in KEYSCALES and plan["language"] == "en" and plan["timesignature"] in "2346"
    assert plan["duration"] == 10 and len(plan["codes"]) == 50
    assert plan["planner"]["tokens"] >= 50 and plan["planner"]["tokens_per_second"] > 0
    assert plan["planner"]["settings"]["temperature"] == 0.85
    assert run.settings["request"]["think"] is True and run.settings["request"]["audio_codes"] == ""
    assert read_take(run).shape == (10 * 48_000, 2)


def test_reuse_plan_renders_the_same_song_without_planning(thinking_studio, studio):
    first = thinking_studio.generate(thinking_request(lm_rewrite_caption=True), RunControl())
    values = replay_values(first.settings)
    assert values["audio_codes"].count("<|audio_code_") == 50
    assert values["prompt"] == first.settings["plan"]["caption"]
    # ``studio`` has no planner: the replay must not need one.
    again = studio.generate(GenerateRequest.from_values(values), RunControl())
    assert again.settings["plan"] is None
    np.testing.assert_array_equal(read_take(again), read_take(first))


def test_the_plan_changes_the_song(thinking_studio, studio):
    planned = thinking_studio.generate(thinking_request(), RunControl())
    plain = studio.generate(thinking_request(think=False), RunControl())
    assert not np.array_equal(read_take(planned), read_take(plain))


def test_a_run_without_a_plan_has_none_to_reuse(studio):
    run = studio.generate(thinking_request(think=False), RunControl())
    with pytest.raises(ValueError, match="plan: this run was made without the planner"):
        replay_values(run.settings)


def test_think_without_a_planner_is_refused_before_any_model_time(studio):
    with pytest.raises(ValueError, match="think: this studio was started without a planner"):
        studio.generate(thinking_request(), RunControl())
    assert list(studio.store.list_runs()) == []


def test_cancel_while_planning_saves_nothing(thinking_studio):
    control = RunControl()
    messages = []

    def on_progress(fraction: float, message: str) -> None:
        messages.append(message)
        if message.startswith("Planning"):
            control.cancel()

    control._on_progress = on_progress
    with pytest.raises(Cancelled):
        thinking_studio.generate(thinking_request(), control)
    assert control.steps_done == 0  # the DiT never ran
    root = thinking_studio.store.root
    assert not root.exists() or not [path for path in root.iterdir() if path.is_dir()]


def test_progress_runs_forward_through_planning_and_rendering(thinking_studio):
    seen: list[float] = []
    thinking_studio.generate(thinking_request(), RunControl(lambda fraction, message: seen.append(fraction)))
    assert seen == sorted(seen) and seen[-1] == 1.0


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        ("<|audio_code_1|> hello", "audio_codes: holds something other than"),
        ("<|audio_code_1|>" * 49, "audio_codes: 49 codes make 9.8 s"),
        ("<|audio_code_64000|>" * 50, "audio_codes: 64000 is outside"),
    ],
)
def test_bad_audio_codes_are_refused(codes, message):
    with pytest.raises(ValueError, match=message):
        thinking_request(audio_codes=codes).validate()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lm_temperature": 3}, "lm_temperature"),
        ({"lm_top_p": 0}, "lm_top_p"),
        ({"lm_guidance_scale": 0.5}, "lm_guidance_scale"),
        ({"lm_top_k": -1}, "lm_top_k"),
    ],
)
def test_bad_planner_settings_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        thinking_request(**change).validate()


def test_a_planner_that_cannot_load_says_so_and_plain_generate_still_works(tiny_backend, tmp_path):
    from lm.planner import Planner
    from outputs import OutputStore
    from studio import Studio

    broken = Planner(str(tmp_path / "missing"), backend="transformers", device="cpu")
    studio = Studio(backend=tiny_backend, store=OutputStore(tmp_path / "out"), planner=broken)
    with pytest.raises(ModelUnavailableError, match="Turn Think off"):
        studio.generate(thinking_request(), RunControl())
    run = studio.generate(thinking_request(think=False), RunControl())
    assert run.settings["plan"] is None


def test_planned_metadata_is_valid_when_the_user_leaves_it_blank(thinking_studio):
    run = thinking_studio.generate(
        thinking_request(bpm=None, vocal_language="es", lm_rewrite_caption=False), RunControl()
    )
    plan = run.settings["plan"]
    assert 30 <= plan["bpm"] <= 300 and plan["language"] == "es" and plan["language"] in VOCAL_LANGUAGES
    assert plan["caption"] == "calm piano ballad"  # not rewritten when asked not to
    assert dataclasses.asdict(GenerateRequest())["think"] is False


# ---- official defaults and parallel thinking, through the studio


@pytest.fixture
def choosing_studio(tiny_backend, cache_dir, tmp_path):
    """A studio whose planner ends a song it was given no length for by 12 s (a random LM never ends one)."""
    from lm.planner import Planner
    from outputs import OutputStore
    from studio import Studio
    from tools.tiny_model import ensure_tiny_planner

    planner = Planner(
        str(ensure_tiny_planner(cache_dir)),
        backend="transformers",
        device="cpu",
        max_caption_tokens=8,
        max_duration_s=12,
    )
    return Studio(backend=tiny_backend, store=OutputStore(tmp_path / "outputs"), planner=planner)


def test_think_defaults_leave_language_and_length_to_the_planner(choosing_studio):
    defaults = choosing_studio.defaults()
    assert (defaults.think, defaults.vocal_language, defaults.audio_duration) == (True, "unknown", None)
    request = dataclasses.replace(defaults, prompt="calm piano ballad", lyrics=LYRICS, num_inference_steps=2, seed=3)
    run = choosing_studio.generate(request, RunControl())
    plan = run.settings["plan"]
    assert plan["language"] in VOCAL_LANGUAGES and 10 <= plan["duration"] <= 12
    assert len(plan["codes"]) == plan["duration"] * 5
    assert read_take(run).shape == (plan["duration"] * 48_000, 2)
    assert run.settings["request"]["audio_duration"] is None  # the request as asked; the plan says what was chosen


def test_without_think_a_duration_is_needed():
    with pytest.raises(ValueError, match="audio_duration: give the song's length"):
        GenerateRequest.from_values({"prompt": "pop", "audio_duration": -1}).validate()
    assert GenerateRequest.from_values({"prompt": "pop", "think": True, "audio_duration": -1}).audio_duration is None


def test_each_take_is_its_own_song_and_reuse_picks_one(thinking_studio):
    run = thinking_studio.generate(thinking_request(batch_size=2), RunControl())
    first, second = run.settings["plan"]["takes"]
    assert first["codes"] != second["codes"] and first["bpm"] == second["bpm"] == 97
    values = replay_values(run.settings, take=2)
    assert values["audio_codes"].count("<|audio_code_") == 50 and values["seed"] == run.takes[1].seed
    assert values["audio_codes"] == "".join(f"<|audio_code_{c}|>" for c in second["codes"])
