"""Vary and FlowEdit as the studio runs them: saved runs, their settings, and reproducibility."""

from __future__ import annotations

import dataclasses
import json
from urllib.parse import parse_qsl

import numpy as np
import pytest
import soundfile as sf

import batch
from backend import RunControl
from modes import CoverRequest, FlowEditRequest, GenerateRequest
from outputs import OutputStore
from studio import Studio
from ui.share import request_from_query, share_query
from variations import VaryRequest


def takes_of(run) -> list[np.ndarray]:
    return [sf.read(take.files["wav"], dtype="float32")[0] for take in run.takes]


def song(**changes) -> GenerateRequest:
    values = dict(prompt="lofi piano", audio_duration=10, seed=77, num_inference_steps=4, wav_bit_depth="32f")
    return GenerateRequest(**{**values, **changes})


@pytest.fixture()
def source_wav(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "source.wav"
    sf.write(path, (0.2 * rng.standard_normal((12 * 48_000, 2))).astype(np.float32), 48_000, subtype="FLOAT")
    return str(path)


def test_vary_at_zero_is_the_parent_and_at_one_a_fresh_take(studio):
    parent = studio.generate(song(batch_size=2), RunControl())
    same = studio.vary(VaryRequest(parent.run_id, variance=0.0, seed=5), RunControl())
    for mine, theirs in zip(takes_of(same), takes_of(parent), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert same.settings["vary"] == {
        "parent_run_id": parent.run_id,
        "parent_seeds": [77, 78],
        "seed": 5,
        "variance": 0.0,
    }
    assert same.settings["request"]["seed"] == 5
    fresh = studio.vary(VaryRequest(parent.run_id, variance=1.0, seed=5), RunControl())
    retake = studio.generate(song(batch_size=2, seed=5), RunControl())
    for mine, theirs in zip(takes_of(fresh), takes_of(retake), strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_vary_moves_further_from_the_parent_as_the_variance_grows(studio):
    parent = studio.generate(song(), RunControl())
    distances = []
    for variance in (0.1, 0.5, 1.0):
        varied = studio.vary(VaryRequest(parent.run_id, variance=variance, seed=9), RunControl())
        distances.append(float(np.linalg.norm(takes_of(varied)[0] - takes_of(parent)[0])))
    assert 0 < distances[0] < distances[1] < distances[2]


def test_a_cover_is_reproducible_and_varies_at_zero_to_itself(studio, source_wav):
    cover = CoverRequest(src_audio=source_wav, prompt="jazz", seed=4, num_inference_steps=2, wav_bit_depth="32f")
    first = studio.generate(cover, RunControl())
    again = studio.generate(cover, RunControl())
    np.testing.assert_array_equal(takes_of(first)[0], takes_of(again)[0])  # the source encoding is seeded
    same = studio.vary(VaryRequest(first.run_id, variance=0.0, seed=123), RunControl())
    np.testing.assert_array_equal(takes_of(same)[0], takes_of(first)[0])


def test_vary_replays_a_planned_runs_plan(thinking_studio):
    parent = thinking_studio.generate(song(think=True, lm_rewrite_caption=False), RunControl())
    no_planner = Studio(backend=thinking_studio.backend, store=thinking_studio.store)
    same = no_planner.vary(VaryRequest(parent.run_id, variance=0.0, seed=1), RunControl())
    np.testing.assert_array_equal(takes_of(same)[0], takes_of(parent)[0])


def test_vary_refuses_a_variation_another_model_and_a_missing_run(studio, tiny_base_backend):
    parent = studio.generate(song(), RunControl())
    child = studio.vary(VaryRequest(parent.run_id, variance=0.3, seed=2), RunControl())
    with pytest.raises(ValueError, match="is itself a variation; vary its parent"):
        studio.vary(VaryRequest(child.run_id, variance=0.3), RunControl())
    other = Studio(backend=tiny_base_backend, store=studio.store)
    with pytest.raises(ValueError, match="a variation needs the parent's model"):
        other.vary(VaryRequest(parent.run_id, variance=0.3), RunControl())
    with pytest.raises(ValueError):
        studio.vary(VaryRequest("no-such-run", variance=0.3), RunControl())
    with pytest.raises(ValueError, match="variance"):
        studio.vary(VaryRequest(parent.run_id, variance=1.5), RunControl())


def test_flow_edit_runs_and_saves_like_every_mode(studio, source_wav):
    request = FlowEditRequest(
        src_audio=source_wav,
        source_prompt="jazz trio",
        prompt="jazz trio with a trumpet",
        lyrics="[verse]\nnew words here",
        source_lyrics="[verse]\nold words here",
        seed=3,
        repainting_start=2.0,
        repainting_end=6.0,
        wav_bit_depth="32f",
    )
    run = studio.generate(request, RunControl())
    assert run.settings["mode"] == "flow_edit" and run.settings["inputs"] == {"src_audio": "source.wav"}
    take = takes_of(run)[0]
    source = sf.read(source_wav, dtype="float32")[0]
    assert take.shape == source.shape
    np.testing.assert_array_equal(take[:48_000], source[:48_000])  # outside the segment: untouched
    assert not np.array_equal(take[3 * 48_000 : 5 * 48_000], source[3 * 48_000 : 5 * 48_000])


def test_flow_edit_defaults_follow_the_checkpoint(tiny_backend, tiny_base_backend, tmp_path):
    turbo = Studio(backend=tiny_backend, store=OutputStore(tmp_path)).defaults(FlowEditRequest)
    base = Studio(backend=tiny_base_backend, store=OutputStore(tmp_path)).defaults(FlowEditRequest)
    assert (turbo.guidance_scale, turbo.source_guidance_scale) == (1.0, 1.0)
    assert (base.guidance_scale, base.source_guidance_scale) == (13.5, 3.5)


def test_a_batch_file_runs_a_flow_edit_entry(studio, source_wav, tmp_path):
    path = tmp_path / "requests.json"
    entry = {"mode": "flow_edit", "src_audio": source_wav, "source_prompt": "jazz trio", "prompt": "jazz trio, trumpet"}
    path.write_text(json.dumps([{**entry, "seed": 4, "num_inference_steps": 2, "repainting_end": -1}]))
    requests = batch.read_requests(path)
    assert [type(request) for request in requests] == [FlowEditRequest]
    assert requests[0].repainting_end is None  # -1: the whole song, as the form says it
    (run,) = batch.run_batch(studio, requests)
    assert run.settings["mode"] == "flow_edit" and run.settings["request"]["prompt"] == "jazz trio, trumpet"
    assert takes_of(run)[0].shape == sf.read(source_wav, dtype="float32")[0].shape


@pytest.mark.parametrize("segment", [{"repainting_start": 2.0, "repainting_end": 6.5}, {}])
def test_a_share_link_round_trips_a_flow_edit_request(segment):
    request = FlowEditRequest(
        src_audio="song.wav",
        source_prompt="jazz trio",
        source_lyrics="[verse]\nold words",
        prompt="jazz trio with a trumpet",
        lyrics="[verse]\nnew words",
        source_guidance_scale=3.5,
        n_max=5,
        n_avg=2,
        seed=9,
        **segment,
    )
    query = share_query(request)
    assert "mode=flow_edit" in query and "song.wav" not in query  # links never carry audio
    restored = request_from_query(parse_qsl(query.lstrip("?"), keep_blank_values=True))
    assert restored == dataclasses.replace(request, src_audio="")
