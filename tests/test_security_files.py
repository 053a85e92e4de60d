"""Files and runs an attacker reaches through a real server (issue #18): settings that name
server files, unbounded settings JSON, a kept source that is a web page, hidden or foreign files
under the outputs folder, leftovers and links there, and, on a Space, other visitors' runs."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from test_app import free_port

import app
from backend import RunControl
from modes import GenerateRequest
from outputs import STAGING_PREFIX, STALE_STAGING_S, OutputStore, parse_settings_text
from studio import Studio
from ui.history import RunOwners

SPACE_ENV = "SPACE_ID"  # what serving.on_space reads


def serve(studio: Studio):
    port = free_port()
    demo = app.launch(studio, "127.0.0.1", port, preload=False, prevent_thread_lock=True, quiet=True)
    return demo, Client(f"http://127.0.0.1:{port}/", verbose=False), f"http://127.0.0.1:{port}"


def song(path: Path, seconds: float = 10, tail: bytes = b"") -> Path:
    t = np.arange(int(seconds * 44_100)) / 44_100
    sf.write(path, 0.3 * np.sin(2 * np.pi * 330 * t), 44_100, format="WAV")
    with path.open("ab") as file:
        file.write(tail)
    return path


def call(base: str, fn_index: int, data: list, session: str | None = None) -> dict:
    """One event by its index, as the page calls it (private events included): the completed
    message, plus every warning or info note the server showed on the way."""
    session = session or uuid.uuid4().hex
    with httpx.Client(base_url=base, timeout=60) as http:
        body = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None}
        joined = http.post("/gradio_api/queue/join", json=body)
        joined.raise_for_status()
        notes = []
        with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("msg") == "log":
                    notes.append(message.get("log", ""))
                if message.get("msg") == "process_completed":
                    return {**message, "notes": notes}
    raise AssertionError("the event never completed")


def fn_index(config: dict, api_name: str | None = None, trigger: str | None = None) -> list[int]:
    """Indices of the events with this API name or this trigger (e.g. "load")."""
    return [
        dep["id"]
        for dep in config["dependencies"]
        if (api_name is not None and dep.get("api_name") == api_name)
        or (trigger is not None and any(t[1] == trigger for t in dep["targets"]))
    ]


@pytest.fixture(scope="module")
def server(tiny_backend, tmp_path_factory):
    studio = Studio(backend=tiny_backend, store=OutputStore(tmp_path_factory.mktemp("outputs")))
    demo, client, base = serve(studio)
    yield studio, client, base
    client.close()
    demo.close()


@pytest.fixture(scope="module")
def cover_run(server, tmp_path_factory):
    """A Cover run whose source was uploaded as ``song.html``: a valid WAV with a page appended."""
    _, client, _ = server
    upload = song(tmp_path_factory.mktemp("up") / "song.html", tail=b"<html><script>alert(1)</script></html>")
    _, settings = client.predict(
        src_audio=handle_file(str(upload)), prompt="kept source", seed=3, num_inference_steps=2, api_name="/cover"
    )
    return settings


# 1. Apply settings never reads a server path, and names no file outside the run's own folder.


def test_text_that_is_not_json_is_never_read_as_a_path(server, cover_run):
    studio, client, _ = server
    for path in ("/etc/passwd", str(studio.store.root / cover_run["run_id"] / "settings.json")):
        with pytest.raises(AppError, match=r"^settings: not valid JSON"):
            client.predict(path, None, api_name="/apply_settings")
        # The same path sent as the upload: refused in words, and never opened.
        with pytest.raises(AppError, match=r"^settings: the upload is not an uploaded file"):
            client.predict("", path, api_name="/apply_settings")


def _form_files(values: list) -> set[str]:
    """The files an apply put into the form (Gradio sends each as a file record)."""
    return {v["path"] for v in values if isinstance(v, dict) and v.get("path")}


def test_files_a_settings_record_names_elsewhere_are_dropped_with_a_note(server, cover_run, tmp_path):
    studio, client, base = server
    folder = studio.store.root / cover_run["run_id"]
    secret = tmp_path / "secret.wav"
    song(secret, 10)
    (folder / "link.wav").symlink_to(secret)
    index = fn_index(client.config, api_name="apply_settings")[0]
    crafted = [
        {"run_id": "../..", "inputs": {"src_audio": "etc/passwd"}},
        {"run_id": cover_run["run_id"], "inputs": {"src_audio": "../../secret.wav"}},
        {"run_id": cover_run["run_id"], "inputs": {"src_audio": "link.wav"}},
        {"run_id": cover_run["run_id"], "inputs": {"src_audio": "settings.html"}},
        {"request": {**cover_run["request"], "src_audio": str(secret), "cover_image": str(app.__file__)}},
    ]
    for changes in crafted:
        record = {**cover_run, "inputs": {}, **changes}
        answer = call(base, index, [json.dumps(record), None])
        assert answer["success"], answer
        values = answer["output"]["data"]
        assert "kept source" in values, "the rest of the settings still applies"
        assert not _form_files(values), (changes, _form_files(values))
        assert any(note.startswith("src_audio: dropped") for note in answer["notes"]), answer["notes"]
    # The run's own kept copy still comes back.
    values = call(base, index, [json.dumps(cover_run), None])["output"]["data"]
    assert [Path(p).name for p in _form_files(values)] == ["source.wav"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"request": {"seed": ' + "9" * 5000 + "}}", "settings: a number has too many digits"),
        ("[" * 50_000 + "]" * 50_000, "settings: nested too deeply"),
        (json.dumps({"request": {}, "pad": "x" * 1_100_000}), "settings: over 1 MB of text"),
        (json.dumps({"request": {}, "many": {str(i): 0 for i in range(10_001)}}), "settings: over 10,000 names"),
        ('{"request": {"seed": NaN}}', "settings: NaN is not a number"),
    ],
)
def test_pasted_json_is_bounded_with_named_refusals(server, text, message):
    _, client, _ = server
    with pytest.raises(AppError) as error:
        client.predict(text, None, api_name="/apply_settings")
    assert str(error.value).startswith(message), str(error.value)


def test_the_bounded_loader_takes_any_shape_for_other_readers():
    assert parse_settings_text('[{"prompt": "a"}]', label="requests") == [{"prompt": "a"}]
    with pytest.raises(ValueError, match=r"^requests: over 100,000 values"):
        parse_settings_text("[" + ",".join(["1"] * 100_001) + "]", label="requests")


# 3. A kept source is named from its bytes; the outputs folder serves only the studio's types.


def test_a_kept_source_is_named_from_its_detected_format(server, cover_run):
    studio, _, _ = server
    folder = studio.store.root / cover_run["run_id"]
    assert cover_run["inputs"] == {"src_audio": "source.wav"}
    assert (folder / "source.wav").is_file()
    assert not [p.name for p in folder.iterdir() if p.suffix in (".html", ".htm", ".svg")]


def test_the_outputs_folder_serves_no_page_script_or_hidden_file(server, cover_run, tmp_path):
    studio, _, base = server
    root = studio.store.root
    folder = root / cover_run["run_id"]
    secret = tmp_path / "outside.json"
    secret.write_text('{"secret": 1}')
    planted = {
        folder / "evil.html": "<script>alert(1)</script>",
        folder / "evil.svg": '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        folder / "evil.js": "alert(1)",
        folder / ".hidden.json": "{}",
        root / ".gpu-timings.json": "{}",
        root / f"{STAGING_PREFIX}x" / "take1.wav": "RIFF",
    }
    for path, text in planted.items():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    (folder / "link.json").symlink_to(secret)
    # Both of Gradio's file routes (file=PATH and the older file/PATH), and a doubled slash.
    routes = ("/gradio_api/file=", "/gradio_api/file/", "/gradio_api//file=")
    for path in [*planted, folder / "link.json", Path(f"{root}/{cover_run['run_id']}/../.gpu-timings.json")]:
        for route in routes:
            for method in ("GET", "HEAD"):
                response = httpx.request(method, f"{base}{route}{path}")
                assert response.status_code in (403, 404), (route, path, response.status_code)
                assert "text/html" not in response.headers.get("content-type", "")
    for route in routes[:2]:
        take = httpx.get(f"{base}{route}{folder / 'take1.wav'}")
        assert take.status_code == 200 and take.headers["content-type"] == "audio/wav", route
        assert httpx.get(f"{base}{route}{folder / 'settings.json'}").status_code == 200


# 4. Leftovers and links in the outputs folder.


def test_a_crashed_stems_split_is_cleaned_up_when_the_store_starts(tmp_path):
    store = OutputStore(tmp_path)
    run = store.save_run({"request": {"prompt": "x", "lyrics": ""}, "mode": "generate"}, [np.zeros((2, 480))], [1])
    stale = run.folder / f"{STAGING_PREFIX}stems-take1-htdemucs-0a1b"
    fresh = run.folder / f"{STAGING_PREFIX}stems-take1-htdemucs-2c3d"
    for folder in (stale, fresh):
        folder.mkdir()
        (folder / "drums.flac").write_bytes(b"half")
    old = time.time() - STALE_STAGING_S - 10
    os.utime(stale, (old, old))
    OutputStore(tmp_path)
    assert not stale.exists()
    assert fresh.exists(), "a split another process is still writing must survive"
    assert (run.folder / "take1.wav").is_file(), "the run itself is untouched"


def test_a_linked_run_folder_is_neither_listed_nor_written_into(server, tmp_path):
    studio, client, _ = server
    elsewhere = tmp_path / "elsewhere"
    real = studio.generate(GenerateRequest(prompt="real", audio_duration=10, num_inference_steps=2), RunControl())
    # A copy of a real run outside the outputs folder, linked in under another name.
    elsewhere.mkdir()
    for file in real.folder.iterdir():
        (elsewhere / file.name).write_bytes(file.read_bytes())
    (studio.store.root / "planted-run").symlink_to(elsewhere, target_is_directory=True)
    assert "planted-run" not in [run["run_id"] for run in studio.store.list_runs()]
    with pytest.raises(AppError, match="no run called 'planted-run'"):
        client.predict(run_id="planted-run", take=1, stem_model="demucs_unittest", api_name="/stems")
    for write in (
        lambda: studio.store.add_to_run("planted-run", "stems", {"a.flac": lambda path: path.write_bytes(b"")}),
        lambda: studio.store.delete_run("planted-run"),
    ):
        with pytest.raises(ValueError, match="no run called"):
            write()
    assert sorted(p.name for p in elsewhere.iterdir()) == sorted(p.name for p in real.folder.iterdir())


# 2. On a Space, nothing lists, restores or opens a run another visitor made.


@pytest.fixture(scope="module")
def space(tiny_backend, tmp_path_factory):
    with pytest.MonkeyPatch.context() as env:
        env.setenv(SPACE_ENV, "someone/ace-music-studio")
        env.delenv("SPACES_ZERO_GPU", raising=False)
        studio = Studio(backend=tiny_backend, store=OutputStore(tmp_path_factory.mktemp("space-outputs")))
        source = song(tmp_path_factory.mktemp("up") / "theirs.wav")
        from modes import CoverRequest

        theirs = studio.generate(
            CoverRequest(src_audio=str(source), prompt="another visitor's secret song", num_inference_steps=2),
            RunControl(),
        )
        demo, client, base = serve(studio)
        yield studio, client, base, theirs
        client.close()
        demo.close()


def test_a_space_sends_no_other_visitors_runs_with_the_page(space):
    _, client, base, theirs = space
    config = httpx.get(f"{base}/config").text
    assert theirs.run_id not in config and "secret song" not in config
    loads = fn_index(client.config, trigger="load")
    assert loads
    for index in loads:
        inputs = next(dep for dep in client.config["dependencies"] if dep["id"] == index)["inputs"]
        answer = json.dumps(call(base, index, [None] * len(inputs)))
        assert theirs.run_id not in answer and "secret song" not in answer


def test_a_space_opens_no_run_this_browser_did_not_make(space):
    _, client, base, theirs = space
    _, mine = client.predict(prompt="mine", audio_duration=10, num_inference_steps=2, api_name="/generate")
    config = client.config
    restores = [
        dep["id"] for dep in config["dependencies"] if any(t[1] == "click" for t in dep["targets"]) and dep["inputs"]
    ]
    history_restore = next(i for i in restores if _targets_id(config, i, "history-restore"))
    # A History list edited to claim their run: the page offers only this browser's own.
    history_list = next(
        i for i in fn_index(config, trigger="load") if _targets_id(config, i, "history-pick", "outputs")
    )
    forged = [{"run_id": theirs.run_id, "ticket": "0" * 64}, {"run_id": mine["run_id"]}]
    listed = json.dumps(call(base, history_list, [forged], session=client.session_hash)["output"]["data"])
    assert mine["run_id"] in listed and theirs.run_id not in listed
    assert call(base, history_restore, [mine["run_id"]], session=client.session_hash)["success"]
    refused = call(base, history_restore, [theirs.run_id], session=client.session_hash)
    assert not refused["success"] and "secret song" not in json.dumps(refused)
    with pytest.raises(AppError, match="was made in this browser"):
        client.predict(run_id=theirs.run_id, take=1, stem_model="demucs_unittest", api_name="/stems")
    with pytest.raises(AppError, match=r"^parent_run_id: no run called .* was made in this browser"):
        client.predict(parent_run_id=theirs.run_id, variance=0.5, api_name="/vary")
    # Their settings.json pasted here applies, but their kept source stays theirs.
    index = fn_index(config, api_name="apply_settings")[0]
    applied = call(base, index, [json.dumps(theirs.settings), None], session=client.session_hash)
    assert applied["success"] and not _form_files(applied["output"]["data"])
    assert any("was not made in this browser" in note for note in applied["notes"])


def _targets_id(config: dict, dep_id: int, elem_id: str, where: str = "targets") -> bool:
    """Whether an event is triggered by (or, with ``where="outputs"``, writes) the component ``elem_id``."""
    dep = next(d for d in config["dependencies"] if d["id"] == dep_id)
    ids = {c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id}
    found = [target[0] for target in dep["targets"]] if where == "targets" else dep["outputs"]
    return any(i in ids for i in found)


def test_a_history_entry_proves_its_run_only_with_the_servers_ticket():
    owners = RunOwners()
    mine, theirs = "20260101-000000-mine-1", "20260101-000000-theirs-2"
    history = [{"run_id": mine, "ticket": owners.ticket(mine)}, {"run_id": theirs, "ticket": "0" * 64}, {"run_id": "x"}]
    assert [item["run_id"] for item in owners.adopt("reloaded", history)] == [mine]
    assert owners.owns("reloaded", mine) and not owners.owns("reloaded", theirs)
    assert not owners.owns("another browser", mine)
    assert RunOwners().adopt("elsewhere", history) == [], "another server's secret proves nothing"
