"""The studio as a client sees it: a real server on a free port, called through gradio_client."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
from pathlib import Path

import gradio as gr
import httpx
import pytest
import soundfile as sf
from gradio_client import Client
from gradio_client.exceptions import AppError, AuthenticationError

import app
from backend import RunControl
from modes import GenerateRequest
from outputs import OutputStore
from serving.env import network_access
from studio import Studio
from ui.controls import CONTROLS
from ui.history import add_to_history, history_choices
from ui.runs import SongRun

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_backend, tmp_path_factory):
    studio = Studio(backend=tiny_backend, store=OutputStore(tmp_path_factory.mktemp("outputs")))
    port = free_port()
    demo = app.launch(studio, "127.0.0.1", port, preload=False, prevent_thread_lock=True, quiet=True)
    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    yield studio, client
    client.close()
    demo.close()


def test_generate_endpoint_takes_the_request_names(server):
    _, client = server
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/generate"]
    names = [p["parameter_name"] for p in api["parameters"]]
    assert sorted(names) == sorted(f.name for f in dataclasses.fields(GenerateRequest))
    assert all(p["parameter_has_default"] for p in api["parameters"]), "every setting may be omitted"


def test_generate_over_http_returns_files_and_settings(server):
    studio, client = server
    files, settings = client.predict(
        prompt="lofi piano", lyrics="[verse]\nhello", audio_duration=12, seed=99, api_name="/generate"
    )
    by_suffix = {Path(f).suffix: f for f in files}
    assert set(by_suffix) == {".wav", ".flac", ".mp3", ".json"}
    info = sf.info(by_suffix[".wav"])
    assert (info.samplerate, info.channels, info.frames) == (48_000, 2, 12 * 48_000)
    assert settings["request"]["seed"] == 99
    assert settings["request"]["prompt"] == "lofi piano"
    assert settings["model"]["label"] == "tiny"
    # The run is on the studio's disk, not only in Gradio's cache.
    assert any(studio.store.root.glob("*/take1.wav"))


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"bpm": "fast"}, "bpm"),
        ({"audio_duration": 601}, "audio_duration"),
        ({"audio_duration": 0}, "audio_duration"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"vocal_language": "klingon"}, "vocal_language"),
        ({"batch_size": 9}, "batch_size"),
    ],
)
def test_bad_requests_are_refused_naming_the_field(server, values, field):
    studio, client = server
    before = sorted(studio.store.root.iterdir())
    with pytest.raises(AppError) as error:
        client.predict(prompt="x", api_name="/generate", **values)
    assert str(error.value).startswith(f"{field}:"), str(error.value)
    assert sorted(studio.store.root.iterdir()) == before


def test_apply_settings_restores_the_form(server):
    _, client = server
    _, settings = client.predict(
        prompt="ambient drone", seed=5, batch_size=2, bpm=88, audio_duration=10, api_name="/generate"
    )
    values = client.predict(json.dumps(settings), None, api_name="/apply_settings")
    advanced = [c.name for panel in ("advanced", "lora", "output") for c in CONTROLS if c.panel == panel]
    generate_panel = [c.name for c in CONTROLS if c.panel in ("main", "planner") and "generate" in c.modes]
    restored = dict(zip(advanced, values, strict=False))
    generate_form = dict(zip(generate_panel, values[len(advanced) : len(advanced) + len(generate_panel)], strict=True))
    assert generate_form["prompt"] == "ambient drone"
    assert restored["seed"] == 5 and restored["batch_size"] == 2 and restored["bpm"] == 88
    # The other modes' forms are left as they were.
    assert generate_form["think"] is False and generate_form["audio_codes"] == ""
    assert all(v == {"__type__": "update"} for v in values[len(advanced) + len(generate_panel) : -2])
    assert list(values[-2:]) == ["generate", {"__type__": "update"}]  # the nav; the edit method is left alone


def test_apply_settings_refuses_garbage(server):
    _, client = server
    with pytest.raises(AppError, match="not valid JSON"):
        client.predict("{oops", None, api_name="/apply_settings")


def test_cancel_reaches_the_sessions_run(tiny_backend, tmp_path):
    studio = Studio(backend=tiny_backend, store=OutputStore(tmp_path))
    runs = app.ActiveRuns()

    def progress(fraction: float, message: str) -> None:
        if message.startswith("Denoising step 2/"):
            assert runs.cancel("session-a")

    values = {"prompt": "x", "seed": 1, "num_inference_steps": 8, "audio_duration": 10}
    assert app.run_generate(studio, runs, values, "session-a", progress) is None
    assert not runs.cancel("session-a"), "a finished run is forgotten"
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_other_sessions_cannot_cancel_a_run(tiny_backend, tmp_path):
    studio = Studio(backend=tiny_backend, store=OutputStore(tmp_path))
    runs = app.ActiveRuns()
    tried = []

    def progress(fraction: float, message: str) -> None:
        if message.startswith("Denoising step 2/"):
            tried.append(runs.cancel("session-b"))

    run = app.run_generate(studio, runs, {"prompt": "x", "seed": 1, "audio_duration": 10}, "session-a", progress)
    assert tried == [False]
    assert run is not None and run.folder.is_dir()


def test_retake_draws_a_new_seed(tiny_backend, tmp_path):
    studio = Studio(backend=tiny_backend, store=OutputStore(tmp_path))
    runs = app.ActiveRuns()
    values = {"prompt": "x", "seed": 1, "audio_duration": 10}
    first = app.run_generate(studio, runs, values, "s", None)
    retake = app.run_generate(studio, runs, values, "s", None, SongRun(new_seed=True))
    assert first.settings["request"]["seed"] == 1
    assert retake.settings["request"]["seed"] != 1
    assert {k: v for k, v in retake.settings["request"].items() if k != "seed"} == {
        k: v for k, v in first.settings["request"].items() if k != "seed"
    }


def test_cancel_with_nothing_running_is_harmless():
    assert app.ActiveRuns().cancel("nobody") is False
    control = RunControl()
    runs = app.ActiveRuns()
    runs.start("a", control)
    runs.finish("a", RunControl())  # another run's finish must not drop this one
    assert runs.cancel("a") and control.cancelled


def test_lyrics_beside_a_song_do_not_take_its_cancel():
    """A session writes lyrics while its song renders: Cancel reaches the song, Stop the lyrics."""
    from ui.runs import LYRICS_LANE

    runs = app.ActiveRuns()
    song, lyrics = RunControl(), RunControl()
    runs.start("a", song)
    runs.start("a", lyrics, lane=LYRICS_LANE)
    assert runs.cancel("a") and song.cancelled and not lyrics.cancelled
    runs.finish("a", song)
    assert runs.cancel("a", LYRICS_LANE) and lyrics.cancelled
    other = RunControl()
    runs.start("b", other, lane=LYRICS_LANE)
    assert runs.cancel("b") and other.cancelled  # with no song, Cancel stops what the session runs
    assert not runs.cancel("c", LYRICS_LANE)


def test_importing_app_loads_no_model_and_no_torch():
    code = "import app, sys; assert 'torch' not in sys.modules; assert 'diffusers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_cli_refuses_an_unknown_model():
    result = subprocess.run(
        [sys.executable, "app.py", "--model", "no-such-model"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "not a registry name" in result.stderr


def _song(path: Path, seconds: float, rate: int = 44_100) -> Path:
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, 0.3 * np.sin(2 * np.pi * 330 * t), rate)
    return path


def test_rework_endpoints_take_uploaded_files(server, tmp_path):
    from gradio_client import handle_file

    _, client = server
    src = handle_file(str(_song(tmp_path / "song.wav", 11)))
    files, settings = client.predict(src_audio=src, prompt="bossa nova", seed=1, api_name="/cover")
    wav = next(f for f in files if f.endswith("take1.wav"))
    assert sf.info(wav).frames == 11 * 48_000
    assert settings["mode"] == "cover" and settings["inputs"] == {"src_audio": "source.wav"}

    files, settings = client.predict(
        src_audio=src, prompt="outro", extend_seconds=5, extend_where="after", seed=2, api_name="/extend"
    )
    wav = next(f for f in files if f.endswith("take1.wav"))
    assert sf.info(wav).frames == 16 * 48_000
    assert settings["mode"] == "extend"

    files, settings = client.predict(
        src_audio=src, prompt="new words", repainting_start=2, repainting_end=6, seed=3, api_name="/edit"
    )
    wav = next(f for f in files if f.endswith("take1.wav"))
    assert sf.info(wav).frames == 11 * 48_000
    assert settings["request"]["repainting_end"] == 6


def test_rework_endpoint_refuses_a_segment_outside_the_source(server, tmp_path):
    from gradio_client import handle_file

    _, client = server
    src = handle_file(str(_song(tmp_path / "song.wav", 11)))
    with pytest.raises(AppError, match=r"^repainting_end: 30 s is past the end"):
        client.predict(src_audio=src, prompt="x", repainting_start=2, repainting_end=30, api_name="/edit")


def test_apply_settings_restores_a_rework_run_with_its_source(server, tmp_path):
    from gradio_client import handle_file

    _, client = server
    src = handle_file(str(_song(tmp_path / "seed.wav", 10)))
    _, settings = client.predict(
        src_audio=src, prompt="outro", extend_seconds=7, extend_where="before", seed=8, api_name="/extend"
    )
    values = client.predict(json.dumps(settings), None, api_name="/apply_settings")
    advanced = [c.name for panel in ("advanced", "lora", "output") for c in CONTROLS if c.panel == panel]
    keys = [(m, c.name) for m in app.MODE_TABS for c in CONTROLS if c.panel in ("main", "planner") and m in c.modes]
    keys += [("flow_edit", c.name) for c in CONTROLS if c.panel == "flow"]
    form = dict(zip(keys, values[len(advanced) : len(advanced) + len(keys)], strict=True))
    assert list(values[len(advanced) + len(keys) :]) == ["extend", {"__type__": "update"}]  # the nav, the edit method
    assert form[("extend", "extend_seconds")] == 7
    assert form[("extend", "extend_where")] == "before"
    restored_source = form[("extend", "src_audio")]
    assert Path(restored_source).read_bytes() == (tmp_path / "seed.wav").read_bytes()
    assert form[("generate", "prompt")] == {"__type__": "update"}


def test_a_model_failure_mid_run_is_a_clear_error_and_saves_nothing(tmp_path):
    """The pipeline raising mid-run (a fake loader stands in for a GPU running out of memory)."""
    import torch

    from backend import Backend, DeviceInfo
    from checkpoints import resolve_model

    class FailingPipeline:
        is_turbo = True
        transformer = torch.nn.Identity()  # the sampling hooks attach to the DiT before the call

        def __call__(self, **kwargs):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    backend = Backend(
        resolve_model("turbo"), device=DeviceInfo("cuda", "bfloat16"), loader=lambda *a, **k: FailingPipeline()
    )
    studio = Studio(backend=backend, store=OutputStore(tmp_path))
    with pytest.raises(gr.Error, match="Generation failed: CUDA out of memory"):
        app.run_generate(studio, app.ActiveRuns(), {"prompt": "x", "seed": 1}, "s", None)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_opening_to_the_network_needs_a_login_or_an_explicit_no():
    assert network_access("127.0.0.1", None, False) is None
    assert network_access("0.0.0.0", "ana:s3cret:x", False) == ("ana", "s3cret:x")
    assert network_access("0.0.0.0", None, True) is None
    with pytest.raises(ValueError, match="--auth USER:PASSWORD, or --no-auth"):
        network_access("0.0.0.0", None, False)
    with pytest.raises(ValueError, match=r"^--auth: give it as USER:PASSWORD"):
        network_access("0.0.0.0", "justaname", False)


def test_cli_refuses_an_open_host_without_auth():
    result = subprocess.run(
        [sys.executable, "app.py", "--model", "tiny", "--host", "0.0.0.0"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "--no-auth" in result.stderr


def test_login_is_enforced_over_http(tiny_backend, tmp_path):
    studio = Studio(backend=tiny_backend, store=OutputStore(tmp_path))
    port = free_port()
    demo = app.launch(
        studio, "127.0.0.1", port, preload=False, prevent_thread_lock=True, quiet=True, auth=("ana", "pw")
    )
    try:
        with pytest.raises(AuthenticationError, match="credentials were not provided"):
            Client(f"http://127.0.0.1:{port}/", verbose=False)
        client = Client(f"http://127.0.0.1:{port}/", auth=("ana", "pw"), verbose=False)
        assert "/generate" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        client.close()
    finally:
        demo.close()


def test_stems_endpoint_splits_a_saved_run(server):
    _, client = server
    _, settings = client.predict(prompt="stems please", audio_duration=10, seed=4, api_name="/generate")
    files = client.predict(run_id=settings["run_id"], take=1, stem_model="demucs_unittest", api_name="/stems")
    assert sorted(Path(f).name for f in files) == [
        "bass.flac",
        "drums.flac",
        "other.flac",
        "stems-take1-demucs_unittest.zip",
        "vocals.flac",
    ]
    with pytest.raises(AppError, match="is not the name of a run"):
        client.predict(run_id="../secrets", take=1, stem_model="demucs_unittest", api_name="/stems")


def test_history_keeps_recent_runs_first_without_duplicates(tiny_backend, tmp_path):
    studio = Studio(backend=tiny_backend, store=OutputStore(tmp_path))
    runs = app.ActiveRuns()
    first = app.run_generate(studio, runs, {"prompt": "<b>first</b>", "seed": 1, "audio_duration": 10}, "s", None)
    second = app.run_generate(studio, runs, {"prompt": "second", "seed": 2, "audio_duration": 10}, "s", None)
    history = add_to_history(add_to_history([], first), second)
    assert [item["run_id"] for item in history] == [second.run_id, first.run_id]
    assert [item["run_id"] for item in add_to_history(history, first)] == [first.run_id, second.run_id]
    assert len(add_to_history(history, first, limit=1)) == 1
    labels = [label for label, _ in history_choices(history)]
    assert labels[1].endswith("· generate · <b>first</b>")  # plain text in a dropdown, never markup
    # Whatever a browser's storage holds, the page still renders.
    assert history_choices([None, "junk", {"run_id": 5}, *history]) == history_choices(history)


def test_only_the_outputs_folder_is_served(server, tmp_path):
    studio, client = server
    _, settings = client.predict(prompt="served", audio_duration=10, seed=5, api_name="/generate")
    inside = studio.store.root / settings["run_id"] / "settings.json"
    secret = studio.store.root.parent / "secret.txt"
    secret.write_text("not for the network")
    base = client.src.rstrip("/")
    assert httpx.get(f"{base}/gradio_api/file={inside}").status_code == 200
    for path in (
        str(secret),
        f"{studio.store.root}/../secret.txt",
        f"{studio.store.root}/%2e%2e/secret.txt",
        "/etc/passwd",
        str(ROOT / "app.py"),
    ):
        response = httpx.get(f"{base}/gradio_api/file={path}")
        assert response.status_code in (403, 404), (path, response.status_code)
        assert "not for the network" not in response.text
