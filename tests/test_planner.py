"""The 5 Hz LM planner on a tiny random-weight Qwen3 LM, loaded through both real backends.

Random weights write gibberish, so every valid plan here is the constraints' doing.
"""

from __future__ import annotations

import json
import re
import threading

import numpy as np
import pytest

from backend import Cancelled, ModelUnavailableError, RunControl
from lm.plan import FIELDS, Plan, PlannerSettings, parse_think
from lm.planner import Planner
from lm.session import LoadedLM, Sampling, pick_lm_backend
from tools.tiny_model import NUM_CODES, build_tiny_planner_lm
from validation import AUDIO_CODE_TOKEN, KEYSCALES, VOCAL_LANGUAGES

# A random LM rarely samples the newline that ends a caption: keep captions short.
FAST = PlannerSettings(max_caption_tokens=8)
DURATION_S = 10

THINK = (
    "<think>\nbpm: 96\ncaption: a slow, dusty blues shuffle with a\n  harmonica lead\n"
    "duration: 30\nkeyscale: E minor\nlanguage: 'no'\ntimesignature: 4/4\n</think>\n"
)


@pytest.fixture(scope="session")
def lm_dir(tmp_path_factory):
    return build_tiny_planner_lm(tmp_path_factory.mktemp("planner-lm"))


@pytest.fixture(scope="session")
def torch_planner(lm_dir):
    planner = Planner(str(lm_dir), backend="transformers")
    planner.load()
    return planner


@pytest.fixture(scope="session")
def user_plan(torch_planner):
    """A plan where the user set bpm, key and duration; the LM fills the rest."""
    return torch_planner.plan(
        "calm piano ballad", "[verse]\nhello rain", seed=7, settings=FAST, bpm=97, keyscale="F# minor", duration=10
    )


def assert_valid(plan: Plan, duration: int = DURATION_S) -> None:
    assert 30 <= plan.bpm <= 300
    assert plan.keyscale in KEYSCALES
    assert plan.language in VOCAL_LANGUAGES
    assert plan.timesignature in {"2", "3", "4", "6"}
    assert plan.duration == duration
    assert len(plan.codes) == duration * 5
    assert all(0 <= code < 64_000 for code in plan.codes)
    assert tuple(int(code) for code in AUDIO_CODE_TOKEN.findall(plan.audio_codes)) == plan.codes


def test_parse_think_reads_fields_quotes_and_wrapped_caption():
    assert parse_think(THINK) == {
        "bpm": 96,
        "caption": "a slow, dusty blues shuffle with a harmonica lead",
        "duration": 30,
        "keyscale": "E minor",
        "language": "no",
        "timesignature": "4",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (THINK.replace("</think>", ""), "planner output has no </think>"),
        (THINK.replace("bpm: 96", "bpm: 999"), "bpm: 999 out of range 30-300"),
        (THINK.replace("keyscale: E minor\n", ""), "planner output has no keyscale"),
        (THINK.replace("E minor", "H major"), "keyscale: 'H major'"),
        (THINK.replace("duration: 30", "duration: long"), "duration: 'long' is not a whole number"),
        (THINK.replace("timesignature: 4/4", "timesignature: 5"), "timesignature: '5'"),
    ],
)
def test_parse_think_refuses_malformed_output(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_think(text)


def test_plan_round_trips_through_settings_json_and_its_think_block():
    caption = "an epic orchestral piece: soaring strings, thundering taiko drums and a choir " * 2
    plan = Plan(120, "B♭ minor", "3", "no", 30, caption.strip(), tuple(range(150)))
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    block = plan.think_block()
    assert block.startswith("<think>\nbpm: 120\ncaption: ") and block.endswith("\ntimesignature: 3\n</think>")
    assert "\n  " in block  # yaml.dump wraps a long caption as in training
    assert parse_think(block) == plan.metadata()
    assert plan.audio_codes.startswith("<|audio_code_0|><|audio_code_1|>")
    kwargs = plan.pipeline_kwargs()
    assert kwargs["vocal_language"] == "no" and kwargs["audio_duration"] == 30.0
    assert kwargs["audio_codes"] == plan.audio_codes


def test_plan_refuses_a_wrong_code_count_or_code():
    values = Plan(120, "C major", "4", "en", 30, "pop", tuple(range(150))).to_dict()
    with pytest.raises(ValueError, match="expected 150 codes for 30 s, got 12"):
        Plan.from_dict({**values, "codes": list(range(12))})
    with pytest.raises(ValueError, match="64000 is outside 0-63999"):
        Plan.from_dict({**values, "codes": [64_000] * 150})
    with pytest.raises(ValueError, match="unknown fields \\['tempo'\\]"):
        Plan.from_dict({**values, "tempo": 3})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"temperature": 3.0}, "temperature: must be between 0 and 2, got 3"),
        ({"top_p": 0.0}, "top_p: must be above 0 and at most 1, got 0"),
        ({"top_k": -1}, "top_k: must be between 0 and 1,000,000, got -1"),
        ({"lm_guidance_scale": 0.5}, "lm_guidance_scale: must be between 1 and 10, got 0.5"),
        ({"infer": frozenset({"tempo"})}, "infer: ['tempo'] are not plan fields"),
    ],
)
def test_settings_validate_names_the_field_and_value(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        PlannerSettings(**change).validate()
    assert PlannerSettings().validate().to_dict()["infer"] == sorted(FIELDS)


def test_bad_requests_fail_before_the_model_loads():
    def loader(source, backend):
        raise AssertionError("the model must not load for a bad request")

    planner = Planner("unused", backend="transformers", loader=loader)
    with pytest.raises(ValueError, match="bpm: 999 out of range"):
        planner.plan("pop", seed=0, bpm=999)
    with pytest.raises(ValueError, match="unknown fields \\['tempo'\\]"):
        planner.plan("pop", seed=0, tempo=120)
    with pytest.raises(ValueError, match="duration: not given and not in the planner's infer fields"):
        planner.plan("pop", seed=0, settings=PlannerSettings(infer=frozenset({"bpm"})))
    assert not planner.is_loaded


def test_load_failure_raises_a_clear_error(tmp_path):
    planner = Planner(str(tmp_path / "no-such-model"), backend="transformers")
    with pytest.raises(ModelUnavailableError, match="could not be loaded with transformers"):
        planner.load()
    assert not planner.is_loaded


def test_an_lm_without_audio_codes_is_refused():
    from tools.tiny_model import _build_tokenizer

    planner = Planner("plain-qwen", loader=lambda source, backend: LoadedLM(_build_tokenizer(), object, backend))
    with pytest.raises(ModelUnavailableError, match="no <\\|audio_code_N\\|> tokens"):
        planner.load()


def test_backend_choice():
    assert pick_lm_backend("mlx") == "mlx"
    assert pick_lm_backend("auto") in {"mlx", "transformers"}
    with pytest.raises(ValueError, match="backend: must be one of auto, transformers, mlx, got 'jax'"):
        pick_lm_backend("jax")


# ---- the one sampler (lm.batch), shared by the planner, Describe and the lyrics writer


def draws(logits, sampling: Sampling, count: int, seed: int = 0) -> np.ndarray:
    """``count`` draws from ``logits`` as ``count`` rows of one batch, on the CPU's torch."""
    import torch

    from lm.token_sampler import _sample, _TorchOps

    z = torch.tensor(np.asarray(logits, dtype=np.float32)).expand(count, -1)
    generator = torch.Generator().manual_seed(seed)
    return _sample(_TorchOps(torch), z, sampling, lambda shape: torch.rand(shape, generator=generator)).numpy()


def test_sampling_follows_the_softmax_and_a_seed_repeats_its_draws():
    logits = np.log([0.5, 0.25, 0.15, 0.1])
    picks = draws(logits, Sampling(temperature=0.7), 20_000)
    expected = np.exp(logits / 0.7) / np.exp(logits / 0.7).sum()
    np.testing.assert_allclose(np.bincount(picks, minlength=4) / picks.size, expected, atol=0.015)
    np.testing.assert_array_equal(
        draws(logits, Sampling(0.7, 0.9), 50, seed=3), draws(logits, Sampling(0.7, 0.9), 50, 3)
    )
    assert set(draws(logits, Sampling(temperature=0), 20)) == {0}


def test_top_p_cuts_before_or_after_the_temperature():
    logits = np.log([0.5, 0.25, 0.15, 0.1])
    # On the raw logits 0.5 + 0.25 reach top_p 0.7; sharpened by temperature 0.5 the best alone does.
    assert set(draws(logits, Sampling(temperature=0.5, top_p=0.7), 300)) == {0, 1}
    assert set(draws(logits, Sampling(temperature=0.5, top_p=0.7, temperature_first=True), 300)) == {0}
    assert set(draws(logits, Sampling(top_k=3), 300)) == {0, 1, 2}


def test_top_p_off_samples_the_whole_vocabulary():
    # Nearly uniform, best first: a sampler that only looked at a sorted head would never pass index 1,023.
    picks = draws(-1e-6 * np.arange(4_096), Sampling(top_p=1.0), 1_000)
    assert (picks >= 1_024).mean() > 0.6


@pytest.mark.parametrize("backend", ["torch", "mlx", "numpy"])
def test_a_cpu_tries_the_best_logits_first_and_keeps_the_same_nucleus(backend, monkeypatch):
    from lm import token_sampler as batch

    if backend == "mlx":
        mx = pytest.importorskip("mlx.core")
        ops, array = batch._MlxOps(mx), mx.array
    elif backend == "numpy":  # mlx's sampling on a CPU
        ops, array = batch._NumpyOps(), np.asarray
    else:
        import torch

        ops, array = batch._TorchOps(torch), torch.from_numpy
    rng = np.random.default_rng(0)
    peaked = array((rng.standard_normal((3, 5_000)) * 6).astype(np.float32))  # the nucleus lies in the best 1,024
    flat = array(rng.standard_normal((2, 5_000)).astype(np.float32))  # it does not: the whole row is sorted
    ties = array(np.round(rng.standard_normal((2, 5_000)), 1).astype(np.float32))  # many equal logits
    for z in (peaked, flat, ties):
        head_first = np.array(batch._nucleus(ops, z, 0.9).tolist())
        sorted_ = np.array(batch._sorted_nucleus(ops, z, 0.9).tolist())  # one sort per row, as on a GPU
        monkeypatch.setattr(batch, "SORT_HEAD", 10**9)  # no head: the CPU's bins
        np.testing.assert_array_equal(head_first, np.array(batch._nucleus(ops, z, 0.9).tolist()))
        np.testing.assert_array_equal(head_first, sorted_)
        monkeypatch.undo()
    assert np.array(batch._nucleus(ops, peaked, 0.9).tolist()).sum(-1).max() < batch.SORT_HEAD


def test_a_flat_distribution_stops_trying_the_best_logits_first():
    from lm import token_sampler as batch

    class Counting(batch._NumpyOps):
        heads = 0

        def head(self, z, k):
            Counting.heads += 1
            return super().head(z, k)

    rng = np.random.default_rng(1)
    for scale, tried in ((1.0, 3), (6.0, 20)):  # flat: tries 1, 2 and 16 of 20; peaked: every one
        z = (rng.standard_normal((2, 5_000)) * scale).astype(np.float32)
        Counting.heads, tries = 0, batch.HeadTries()
        for _ in range(20):
            np.testing.assert_array_equal(batch._nucleus(Counting(), z, 0.9, tries), batch._nucleus(Counting(), z, 0.9))
        assert Counting.heads - 20 == tried  # the 20 calls without ``tries`` always try


def test_numpy_sampling_follows_the_softmax_and_a_seed_repeats():
    from lm.token_sampler import _NumpyOps, _sample

    logits = np.log([0.5, 0.25, 0.15, 0.1]).astype(np.float32)

    def numpy_draws(sampling, count, seed=0):
        rng = np.random.default_rng(seed)
        z = np.broadcast_to(logits, (count, 4)).copy()
        return _sample(_NumpyOps(), z, sampling, lambda shape: rng.random(shape, dtype=np.float32))

    picks = numpy_draws(Sampling(temperature=0.7), 20_000)
    expected = np.exp(logits / 0.7) / np.exp(logits / 0.7).sum()
    np.testing.assert_allclose(np.bincount(picks, minlength=4) / picks.size, expected, atol=0.015)
    np.testing.assert_array_equal(numpy_draws(Sampling(0.7, 0.9), 50, 3), numpy_draws(Sampling(0.7, 0.9), 50, 3))
    assert set(numpy_draws(Sampling(temperature=0.5, top_p=0.7), 300)) == {0, 1}


def test_code_vocabulary_comes_from_the_tokenizer(torch_planner):
    vocab = torch_planner.load().vocab
    assert vocab.code_ids.size == NUM_CODES
    assert sorted(vocab.code_values.tolist()) == list(range(NUM_CODES))


def test_plan_keeps_user_fields_and_constrains_the_rest(user_plan):
    assert_valid(user_plan)
    assert (user_plan.bpm, user_plan.keyscale) == (97, "F# minor")
    assert user_plan.caption.strip()


def test_audio_codes_drive_the_tiny_pipeline(user_plan, tiny_backend):
    import torch

    pipe = tiny_backend.load()
    assert max(user_plan.codes) <= pipe.audio_tokenizer.quantizer.codebook_size - 1
    out = pipe(
        prompt=user_plan.caption,
        lyrics="[verse]\nhello rain",
        audio_codes=user_plan.audio_codes,
        audio_duration=float(user_plan.duration),
        num_inference_steps=2,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
    )
    assert tuple(out.audios.shape) == (1, 2, DURATION_S * 48_000)
    assert torch.isfinite(out.audios).all()


def test_same_seed_same_plan_and_guidance_changes_it(torch_planner, user_plan):
    again = torch_planner.plan(
        "calm piano ballad", "[verse]\nhello rain", seed=7, settings=FAST, bpm=97, keyscale="F# minor", duration=10
    )
    assert again == user_plan
    unguided = PlannerSettings(max_caption_tokens=8, lm_guidance_scale=1.0)
    plain = torch_planner.plan(
        "calm piano ballad", "[verse]\nhello rain", seed=7, settings=unguided, bpm=97, keyscale="F# minor", duration=10
    )
    assert_valid(plain)
    assert plain.codes != user_plan.codes


def test_user_caption_is_kept_when_the_lm_may_not_rewrite_it(torch_planner):
    settings = PlannerSettings(max_caption_tokens=8, infer=frozenset({"bpm", "keyscale", "timesignature"}))
    plan = torch_planner.plan("dreamy synthwave, neon nights", seed=1, settings=settings, duration=12, language="ja")
    assert_valid(plan, duration=12)
    assert (plan.caption, plan.language) == ("dreamy synthwave, neon nights", "ja")


def test_a_fully_specified_plan_skips_the_thinking(torch_planner):
    known = dict(bpm=140, keyscale="D minor", timesignature="3", language="en", duration=10)
    settings = PlannerSettings(infer=frozenset({"bpm"}))
    plan = torch_planner.plan("hard techno", seed=2, settings=settings, **known)
    assert_valid(plan)
    assert {name: getattr(plan, name) for name in known} == known
    assert plan.caption == "hard techno"


def test_plan_from_idea_returns_caption_and_metadata_only(torch_planner):
    plan = torch_planner.plan_from_idea("a rainy jazz night in Lisbon", seed=4, settings=FAST)
    assert plan.codes == () and plan.audio_codes == ""
    assert plan.caption.strip() and "audio_codes" not in plan.pipeline_kwargs()
    assert 10 <= plan.duration <= 600 and plan.keyscale in KEYSCALES


def test_progress_and_cancel(torch_planner):
    reports: list[tuple[float, str]] = []
    torch_planner.plan("pop", seed=5, settings=FAST, duration=10, control=RunControl(lambda *r: reports.append(r)))
    fractions = [fraction for fraction, _ in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert reports[-1][1] == "Planning: audio codes 50/50"

    def cancel_midway(fraction: float, message: str) -> None:
        if "audio codes" in message:
            control.cancel()

    control = RunControl(cancel_midway)
    with pytest.raises(Cancelled):
        torch_planner.plan("pop", seed=5, settings=FAST, duration=20, control=control)


def test_mlx_backend_plans_from_a_worker_thread(lm_dir):
    """Gradio runs handlers in worker threads; mlx streams belong to the thread that made them."""
    planner = Planner(str(lm_dir), backend="mlx")
    planner.load()  # loaded on the main thread, used from another, as in the studio
    result: dict[str, object] = {}

    def work() -> None:
        try:
            result["plan"] = planner.plan("lofi hip hop", seed=3, settings=FAST, bpm=80, duration=10)
        except Exception as error:
            result["error"] = error

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(timeout=120)
    assert "error" not in result, result.get("error")
    plan = result["plan"]
    assert isinstance(plan, Plan)
    assert_valid(plan)
    assert plan.bpm == 80
    assert planner.load().lm.backend == "mlx"


# ---- official defaults, parallel thinking and the official formatting


@pytest.fixture(scope="session")
def recorded(lm_dir):
    """A planner whose batches are recorded: the prompts each phase decoded (conditional, unconditional)."""
    import dataclasses

    from lm.session import load_lm

    prompts: list[tuple[str, str | None]] = []

    def loader(source, backend):
        lm = load_lm(source, backend, device="cpu")

        def new_batch(cond, uncond, *rest):
            decode = lm.tokenizer.decode
            prompts.append((decode(cond), None if uncond is None else decode(uncond)))
            return lm.new_batch(cond, uncond, *rest)

        return dataclasses.replace(lm, new_batch=new_batch)

    planner = Planner(str(lm_dir), backend="transformers", loader=loader, max_caption_tokens=8, max_duration_s=12)
    return planner, prompts


LONG_CAPTION = (
    "an epic orchestral piece: soaring strings, thundering taiko drums and a choir that rises over a slow, dark pulse"
)
# Built by hand from official ``_format_metadata_as_cot`` (acestep/llm_inference.py): yaml.dump of the
# sorted fields with allow_unicode, so a caption holding ": " is single-quoted and wrapped at 80
# columns with a two-space continuation, "no" is quoted (YAML would read it as false), ♯ stays as is.
OFFICIAL_THINK = (
    "<think>\nbpm: 120\ncaption: 'an epic orchestral piece: soaring strings, thundering taiko drums and a\n"
    "  choir that rises over a slow, dark pulse'\nduration: 30\nkeyscale: F♯ minor\nlanguage: 'no'\n"
    "timesignature: 4\n</think>"
)


def test_think_block_matches_the_official_formatting_byte_for_byte():
    plan = Plan(120, "F♯ minor", "4", "no", 30, LONG_CAPTION, tuple(range(150)))
    assert plan.think_block() == OFFICIAL_THINK
    assert parse_think(OFFICIAL_THINK) == plan.metadata()
    # All four metadata given: official skips phase 1 and its think block holds those four alone.
    four = "<think>\nbpm: 120\nduration: 30\nkeyscale: F♯ minor\ntimesignature: 4\n</think>"
    assert plan.think_block(("bpm", "duration", "keyscale", "timesignature")) == four


def test_phase_two_prompts_match_the_official_ones(recorded):
    planner, prompts = recorded
    prompts.clear()
    lyrics = "[verse]\nhej"
    plan = planner.plan(
        LONG_CAPTION, lyrics, seed=3, settings=FAST, bpm=120, keyscale="F♯ minor", language="no", duration=10
    )
    assert len(prompts) == 2  # the think phase, then the codes
    think_cond, think_uncond = prompts[0]
    user = f"# Caption\n{LONG_CAPTION}\n\n# Lyric\n{lyrics}\n"
    system = "# Instruction\nGenerate audio semantic tokens based on the given conditions:\n\n"
    # official build_formatted_prompt: the default negative prompt drops the caption from the uncond turn
    assert system in think_cond and user in think_cond and think_cond.endswith("assistant\n")
    assert f"# Lyric\n{lyrics}\n" in think_uncond and "# Caption" not in think_uncond
    codes_cond, codes_uncond = prompts[1]
    think = plan.think_block()
    # official build_formatted_prompt_with_cot: the think block as the assistant turn, then a newline
    assert user in codes_cond and think in codes_cond and codes_cond.endswith("\n")
    assert "keyscale: F♯ minor\nlanguage: 'no'\n" in codes_cond
    assert user in codes_uncond and "<think>\n</think>" in codes_uncond


def test_no_language_and_no_duration_are_the_lms_choice(recorded):
    planner, _ = recorded
    plan = planner.plan("lofi", "[verse]\nhola", seed=4, settings=FAST)
    assert plan.language in VOCAL_LANGUAGES
    assert 10 <= plan.duration <= 12  # ended on its own EOS, or at the studio's longest song
    assert len(plan.codes) == plan.duration * 5
    given = planner.plan("lofi", "[verse]\nhola", seed=4, settings=FAST, duration=11)
    assert given.duration == 11 and len(given.codes) == 55


def test_a_batch_of_takes_shares_the_think_phase_and_differs_in_codes(recorded):
    planner, prompts = recorded
    prompts.clear()
    stats: dict = {}
    first, second = planner.plans("lofi", seed=5, takes=2, settings=FAST, duration=10, stats=stats)
    assert len(prompts) == 2 and stats["takes"] == 2  # one think phase, one codes batch
    assert first.metadata() == second.metadata()
    assert len(first.codes) == len(second.codes) == 50 and first.codes != second.codes
    again = planner.plans("lofi", seed=5, takes=2, settings=FAST, duration=10)
    assert again == [first, second]  # a seed repeats its takes on the same device


def test_all_four_metadata_skip_the_think_phase(recorded):
    planner, prompts = recorded
    prompts.clear()
    stats: dict = {}
    known = dict(bpm=90, keyscale="A minor", timesignature="3", duration=10)
    plan = planner.plan("folk", seed=6, settings=FAST, stats=stats, **known)
    assert len(prompts) == 1  # the codes phase alone
    assert "<think>\nbpm: 90\nduration: 10\nkeyscale: A minor\ntimesignature: 3\n</think>" in prompts[0][0]
    assert stats["tokens"] == 50 and plan.caption == "folk" and plan.language == "unknown"


def test_caption_rewriting_off_leaves_the_caption_out_of_the_think_block(recorded):
    planner, prompts = recorded
    prompts.clear()
    settings = PlannerSettings(max_caption_tokens=8, infer=frozenset(FIELDS) - {"caption"})
    plan = planner.plan("sad  piano", seed=7, settings=settings, bpm=70, duration=10)
    codes_prompt = prompts[-1][0]
    think = codes_prompt[codes_prompt.index("<think>") :]
    assert "caption:" not in think and think.startswith("<think>\nbpm: 70\nduration: 10\nkeyscale: ")
    assert plan.caption == "sad  piano"  # the user's own, untouched


def test_mlx_batches_takes_with_guidance(lm_dir):
    planner = Planner(str(lm_dir), backend="mlx", max_caption_tokens=8)
    first, second = planner.plans("lofi", seed=8, takes=2, settings=FAST, bpm=80, duration=10)
    assert_valid(first)
    assert_valid(second)
    assert first.codes != second.codes
    assert planner.plans("lofi", seed=8, takes=2, settings=FAST, bpm=80, duration=10) == [first, second]
