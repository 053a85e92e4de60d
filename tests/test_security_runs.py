"""Cancel, disconnect and the per-client job cap against a real server driven by gradio_client,
and ``--mcp`` refused beside ``--auth``."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import ValidationError
from gradio_client.utils import Status

import app
from backend import Backend, Cancelled, DeviceInfo, RunControl, load_pipeline
from checkpoints import resolve_model
from outputs import OutputStore
from studio import Studio
from ui.runs import BUSY_MESSAGE, MAX_JOBS_PER_ADDRESS

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 120  # a bound on every wait below, never a timing assertion
SONG = {"prompt": "lofi piano", "audio_duration": 10, "seed": 1}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SlowPipeline:
    """The tiny pipeline, with a pause and a gate at every denoising step so that a client can
    cancel or leave mid-run; it counts the steps each call made."""

    def __init__(self, pipe, step_pause_s: float = 0.1) -> None:
        self._pipe = pipe
        self.step_pause_s = step_pause_s
        self.steps: list[int] = []
        self.stepping = threading.Event()  # set at every step
        self.gate = threading.Event()  # steps wait while it is clear
        self.gate.set()

    def __getattr__(self, name: str):
        return getattr(self._pipe, name)

    def __call__(self, *args, callback_on_step_end, **kwargs):
        self.steps.append(0)
        call = len(self.steps) - 1

        def on_step_end(pipe, step: int, timestep, tensors: dict) -> dict:
            self.steps[call] = step + 1
            self.stepping.set()
            self.gate.wait(WAIT_S)
            time.sleep(self.step_pause_s)
            return callback_on_step_end(pipe, step, timestep, tensors)

        return self._pipe(*args, callback_on_step_end=on_step_end, **kwargs)


@pytest.fixture(scope="module")
def slow_server(cache_dir, tmp_path_factory):
    pipelines: list[SlowPipeline] = []

    def loader(*args, **kwargs) -> SlowPipeline:
        pipelines.append(SlowPipeline(load_pipeline(*args, **kwargs)))
        return pipelines[-1]

    backend = Backend(resolve_model("tiny", cache_dir=cache_dir), device=DeviceInfo("cpu", "float32"), loader=loader)
    backend.load()
    studio = Studio(backend=backend, store=OutputStore(tmp_path_factory.mktemp("outputs")))
    port = free_port()
    demo = app.launch(studio, "127.0.0.1", port, preload=False, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    yield studio, pipelines[0], url
    pipelines[0].gate.set()
    demo.close()


def saved_runs(studio: Studio) -> set[str]:
    root = studio.store.root
    return {path.name for path in root.iterdir() if path.is_dir()} if root.exists() else set()


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


def started(job) -> bool:
    return job.status().code in (Status.PROCESSING, Status.PROGRESS)


def test_job_cancel_stops_the_run_within_a_step_and_saves_nothing(slow_server):
    studio, pipeline, url = slow_server
    before = saved_runs(studio)
    client = Client(url, verbose=False)
    try:
        pipeline.stepping.clear()
        pipeline.gate.clear()  # the first run holds at its first step
        first = client.submit(**SONG, num_inference_steps=8, api_name="/generate")
        assert pipeline.stepping.wait(WAIT_S)
        call = len(pipeline.steps) - 1
        first.cancel()
        # The next job starting shows that Gradio has dropped the cancelled event and freed the slot.
        second = client.submit(**SONG, num_inference_steps=2, api_name="/generate")
        wait_until(lambda: started(second), "the next job to start")
        pipeline.gate.set()
        files, settings = second.result(timeout=WAIT_S)
    finally:
        pipeline.gate.set()
        client.close()
    assert pipeline.steps[call] == 1, "the cancelled run stopped at the step it was in"
    assert saved_runs(studio) - before == {settings["run_id"]}, "only the next job was saved"
    assert any(path.endswith("take1.wav") for path in files)


CLIENT_THAT_LEAVES = textwrap.dedent(
    """
    import sys, time
    from gradio_client import Client
    from gradio_client.utils import Status

    client = Client(sys.argv[1], verbose=False)
    job = client.submit(prompt="lofi piano", audio_duration=10, seed=1, num_inference_steps=200, api_name="/generate")
    # Known to be running only through the event stream: the stream that the kill then closes.
    while job.status().code not in (Status.PROCESSING, Status.PROGRESS):
        time.sleep(0.05)
    print("running", flush=True)
    time.sleep(600)  # killed mid-run by the test
    """
)


def test_a_client_that_disconnects_frees_the_slot_and_saves_nothing(slow_server):
    studio, pipeline, url = slow_server
    before = saved_runs(studio)
    calls = len(pipeline.steps)
    leaver = subprocess.Popen(
        [sys.executable, "-c", CLIENT_THAT_LEAVES, url], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert leaver.stdout.readline().strip() == "running", "the leaving client's run started"
    finally:
        leaver.kill()
        leaver.wait()
    client = Client(url, verbose=False)
    try:
        # Without the fix this waits for all 200 paused steps and then saves the leaver's run.
        files, settings = client.predict(**SONG, num_inference_steps=2, api_name="/generate")
    finally:
        client.close()
    assert pipeline.steps[calls] < 200, "the abandoned run stopped"
    assert saved_runs(studio) - before == {settings["run_id"]}
    assert any(path.endswith("take1.wav") for path in files)


def test_a_third_job_from_one_client_is_refused_before_it_queues(slow_server):
    studio, pipeline, url = slow_server
    before = saved_runs(studio)
    client = Client(url, verbose=False)
    try:
        pipeline.stepping.clear()
        pipeline.gate.clear()
        first = client.submit(**SONG, num_inference_steps=2, api_name="/generate")
        assert pipeline.stepping.wait(WAIT_S)
        # Two more at once: one waits its turn, the other is over the cap.
        others = [client.submit(**SONG, num_inference_steps=2, api_name="/generate") for _ in range(2)]
        refused = []
        wait_until(lambda: any(job.done() for job in others), "one of the two to be answered")
        pipeline.gate.set()
        results = [first.result(timeout=WAIT_S)]
        for job in others:
            try:
                results.append(job.result(timeout=WAIT_S))
            except ValidationError as error:
                refused.append(str(error))
    finally:
        pipeline.gate.set()
        client.close()
    assert len(refused) == 1 and BUSY_MESSAGE in refused[0]
    assert saved_runs(studio) - before == {settings["run_id"] for _, settings in results}
    assert len(results) == 2


def test_new_session_ids_from_one_address_do_not_get_past_the_cap(monkeypatch):
    """A script that opens a new session for every request is still one address; the machine's
    own user (loopback) and a Space's visitors (all behind one proxy) are counted by session only."""
    from types import SimpleNamespace

    from ui.runs import BUSY_ADDRESS_MESSAGE, GPU_CONCURRENCY_ID, MAX_JOBS_PER_CLIENT, _busy

    def asking(host: str, session: str) -> SimpleNamespace:
        return SimpleNamespace(session_hash=session, client=SimpleNamespace(host=host))

    def queued(host: str, count: int, lane: str = GPU_CONCURRENCY_ID) -> list[SimpleNamespace]:
        return [
            SimpleNamespace(session_hash=f"{host}-{i}", concurrency_id=lane, request=asking(host, f"{host}-{i}"))
            for i in range(count)
        ]

    monkeypatch.delenv("SPACE_ID", raising=False)
    lan = "192.0.2.7"
    assert _busy(asking(lan, "fresh"), queued(lan, MAX_JOBS_PER_ADDRESS - 1)) is None
    assert _busy(asking(lan, "fresh"), queued(lan, MAX_JOBS_PER_ADDRESS)) == BUSY_ADDRESS_MESSAGE
    assert _busy(asking("192.0.2.8", "fresh"), queued(lan, MAX_JOBS_PER_ADDRESS)) is None  # another device
    assert _busy(asking(lan, "fresh"), queued(lan, MAX_JOBS_PER_ADDRESS, lane="lyrics")) is None  # not GPU jobs
    assert _busy(asking("127.0.0.1", "fresh"), queued("127.0.0.1", 10)) is None
    # The session cap holds everywhere, loopback included.
    same_session = queued("127.0.0.1", 1) * MAX_JOBS_PER_CLIENT
    session = same_session[0].session_hash
    assert _busy(asking("127.0.0.1", session), same_session[:-1]) is None
    assert _busy(asking("127.0.0.1", session), same_session) == BUSY_MESSAGE
    monkeypatch.setenv("SPACE_ID", "someone/studio")
    assert _busy(asking(lan, "fresh"), queued(lan, MAX_JOBS_PER_ADDRESS)) is None


def test_a_runs_parts_stop_once_its_client_is_gone():
    gone = threading.Event()
    control = RunControl()
    control.stop_when(gone.is_set)
    part = control.part(0.3, 1.0)
    part.check()  # still wanted: no error
    gone.set()
    with pytest.raises(Cancelled):
        part.check()
    assert control.cancelled, "the whole run is cancelled, not only the part"


def test_mcp_with_auth_is_refused_before_any_model_time():
    result = subprocess.run(
        [sys.executable, "app.py", "--model", "tiny", "--mcp", "--auth", "me:secret", "--port", str(free_port())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert result.returncode != 0
    assert "--mcp cannot be combined with --auth yet" in result.stderr
    assert "Running on" not in result.stdout + result.stderr
