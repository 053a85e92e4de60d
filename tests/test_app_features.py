"""Think, Vary, FlowEdit and Start-from-an-idea through the named API, as a client calls them."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import soundfile as sf
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from test_app import free_port

import app
from outputs import OutputStore
from studio import Studio


def serve(studio: Studio):
    port = free_port()
    demo = app.launch(studio, "127.0.0.1", port, preload=False, prevent_thread_lock=True, quiet=True)
    return demo, Client(f"http://127.0.0.1:{port}/", verbose=False)


@pytest.fixture(scope="module")
def server(tiny_backend, tiny_planner, tmp_path_factory):
    from serving.cli import make_lyrics_writer

    store = OutputStore(tmp_path_factory.mktemp("outputs"))
    writer = make_lyrics_writer(None, tiny=True)
    studio = Studio(backend=tiny_backend, store=store, planner=tiny_planner, lyrics=writer)
    demo, client = serve(studio)
    yield studio, client
    client.close()
    demo.close()


def wav_of(files: list[str]) -> np.ndarray:
    return sf.read(next(f for f in files if f.endswith("take1.wav")), dtype="float32")[0]


def test_think_is_on_by_default_with_a_planner_and_the_plan_comes_back(server):
    _, client = server
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/generate"]
    think = next(p for p in api["parameters"] if p["parameter_name"] == "think")
    assert think["parameter_default"] is True
    files, settings = client.predict(
        prompt="calm piano", lyrics="[verse]\nhello", audio_duration=10, seed=4, num_inference_steps=2,
        lm_rewrite_caption=False, api_name="/generate",
    )  # fmt: skip
    assert settings["plan"]["caption"] == "calm piano" and len(settings["plan"]["codes"]) == 50
    assert settings["plan"]["planner"]["tokens_per_second"] > 0
    # The plan replays through the form: Reuse -> the codes in the request -> the same song.
    codes = "".join(f"<|audio_code_{c}|>" for c in settings["plan"]["codes"])
    plan = settings["plan"]
    again_files, again = client.predict(
        prompt=plan["caption"], lyrics="[verse]\nhello", audio_duration=10, seed=4, num_inference_steps=2,
        bpm=plan["bpm"], keyscale=plan["keyscale"], timesignature=plan["timesignature"], audio_codes=codes,
        vocal_language=plan["language"], api_name="/generate",  # the language the planner chose (the default)
    )  # fmt: skip
    assert again["plan"] is None
    np.testing.assert_array_equal(wav_of(again_files), wav_of(files))


def test_vary_endpoint_at_zero_gives_the_parent_back(server):
    _, client = server
    files, settings = client.predict(
        prompt="lofi", audio_duration=10, seed=21, think=False, num_inference_steps=2, api_name="/generate"
    )
    varied_files, varied = client.predict(parent_run_id=settings["run_id"], variance=0, seed=3, api_name="/vary")
    assert varied["vary"]["parent_run_id"] == settings["run_id"] and varied["vary"]["seed"] == 3
    np.testing.assert_array_equal(wav_of(varied_files), wav_of(files))
    with pytest.raises(AppError, match="variance: must be between 0"):
        client.predict(parent_run_id=settings["run_id"], variance=2, api_name="/vary")
    with pytest.raises(AppError, match=r"run_id|no saved run|not found|unknown"):
        client.predict(parent_run_id="../etc", variance=0.5, api_name="/vary")


def test_flow_edit_endpoint_edits_the_whole_song_by_default(server, tmp_path):
    _, client = server
    path = tmp_path / "song.wav"
    sf.write(path, 0.2 * np.random.default_rng(0).standard_normal((11 * 48_000, 2)), 48_000)
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/flow_edit"]
    assert all(p["parameter_has_default"] for p in api["parameters"] if p["parameter_name"] != "src_audio")
    files, settings = client.predict(
        src_audio=handle_file(str(path)), source_prompt="rock", prompt="rock with a choir", seed=2,
        api_name="/flow_edit",
    )  # fmt: skip
    assert settings["mode"] == "flow_edit" and settings["request"]["repainting_end"] is None
    assert wav_of(files).shape == (11 * 48_000, 2)
    # Apply settings puts a FlowEdit run on the Edit tab with FlowEdit chosen.
    values = client.predict(json.dumps(settings), None, api_name="/apply_settings")
    assert list(values[-2:]) == ["edit", "flow_edit"]


def test_idea_fills_the_generate_form(server):
    _, client = server
    prompt, duration, language, bpm, keyscale, timesignature = client.predict(
        "a melancholic bossa nova about leaving Lisbon", api_name="/idea"
    )
    assert prompt.strip() and 10 <= duration <= 600 and 30 <= bpm <= 300
    assert keyscale.split()[-1] in ("major", "minor") and timesignature in ("2", "3", "4", "6") and language
    with pytest.raises(AppError, match="Write a line about the song first"):
        client.predict("   ", api_name="/idea")


def test_lyrics_endpoint_streams_growing_text_without_the_prompt(server):
    _, client = server
    job = client.submit(brief="zebra quokka lighthouse", language="es", seed=5, max_new_tokens=200, api_name="/lyrics")
    texts = [text for text, _ in job]
    final, note = job.result()
    assert texts and all(later.startswith(earlier) for earlier, later in itertools.pairwise(texts))
    assert final.strip() and "Seed 5" in note
    assert "zebra quokka lighthouse" not in final and "songwriter" not in final.lower()
    again, _ = client.predict(brief="zebra quokka lighthouse", language="es", seed=5, max_new_tokens=200,
                              api_name="/lyrics")  # fmt: skip
    assert again == final  # same seed, same lyrics
    with pytest.raises(AppError, match="brief: describe the song"):
        client.predict(brief="  ", api_name="/lyrics")


def test_an_unknown_lora_is_a_clear_error(server):
    _, client = server
    with pytest.raises(AppError, match="no LoRA named or with sha256 'cafebabe12'"):
        client.predict(prompt="x", audio_duration=10, think=False, loras="cafebabe12:1", api_name="/generate")


def test_a_lyrics_model_that_cannot_load_leaves_generate_working(tiny_backend, tmp_path):
    from lyrics_lm import LyricsLM

    broken = LyricsLM(str(tmp_path / "no-such-model"), backend="transformers", device="cpu")
    demo, client = serve(Studio(backend=tiny_backend, store=OutputStore(tmp_path / "out"), lyrics=broken))
    try:
        with pytest.raises(AppError, match="no-such-model"):
            client.predict(brief="rain", api_name="/lyrics")
        _, settings = client.predict(prompt="rain", audio_duration=10, num_inference_steps=1, api_name="/generate")
        assert settings["mode"] == "generate"
    finally:
        client.close()
        demo.close()
