"""Batch runs on Ray: a local two-CPU cluster started here, two actors with the tiny model.

The run folders must match the single-process batch's (audio bytes and settings.json, apart
from the fields that record when and how long), survive a killed actor, resume after Ctrl-C
and report a bad request without stopping the others.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import batch
from outputs import SETTINGS_FILE, OutputStore, load_settings
from studio import Studio

ROOT = Path(__file__).resolve().parent.parent
ACTOR_ARGV = ["--model", "tiny", "--device", "cpu", "--planner", "none", "--lyrics-model", "none"]
TIMING_FIELDS = ("created", "run_id", "timings_s")  # when and how long: differ between any two runs
SONGS = [
    {"prompt": "calm piano", "seed": 11},
    {"prompt": "fast drums", "seed": 12, "instrumental": True},
    {"prompt": "slow strings", "seed": -1},
    {"prompt": "slow strings", "seed": -1},  # the same line twice: two songs, two seeds
    {"prompt": "bright synth", "seed": 14, "batch_size": 2},
    {"mode": "generate", "prompt": "dark bass", "seed": 15, "shift": 2.0},
]

# Each Ray test is bounded well under the suite's 600 s: a minute or two on two shared cores, and a
# stuck cluster fails on the pool's own limits first (actors not ready, a song that never returns),
# with the reason in words, not on pytest's timeout.
RAY_TEST_TIMEOUT_S = 300
ACTOR_READY_S = 120.0  # two tiny-model actors start in seconds; this is only the bound
SONG_LIMIT_S = 120.0  # a 10 s tiny-model song renders in about a second


@pytest.fixture(scope="module")
def ray_cluster(cache_dir, tiny_backend):
    """One local Ray cluster for the module: two CPUs, no dashboard, a small object store (the tiny
    model is built first, so actors load it from the cache). Always shut down, whatever the tests do."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # left by something else in this process: start from a known cluster
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20)
    try:
        yield ray
    finally:
        ray.shutdown()


def requests_file(tmp_path: Path, songs: list[dict]) -> Path:
    path = tmp_path / "requests.json"
    path.write_text(json.dumps([{"audio_duration": 10, "num_inference_steps": 2, **song} for song in songs]))
    return path


def ray_batch(studio: Studio, path: Path, report: Path, watch: Callable | None = None) -> int:
    from serving.ray_batch import RayOptions, run_on_ray

    options = RayOptions(
        argv=ACTOR_ARGV,
        actors=2,
        report=report,
        watch=watch,
        ready_timeout_s=ACTOR_READY_S,
        song_timeout_s=SONG_LIMIT_S,
    )
    return run_on_ray(studio, batch.read_requests(path), options)


def driver_studio(tiny_backend, folder: Path) -> Studio:
    return Studio(backend=tiny_backend, store=OutputStore(folder))


def plain_batch_process(path: Path, outputs: Path) -> None:
    """The single-process batch as a user runs it, ``python batch.py``, in a fresh process with one
    thread as each actor has (one CPU each: on a CPU a sum's order follows the threads). Not this
    test process: the suite's earlier tests leave it in states that move the last bits of a float."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "batch.py", str(path), *ACTOR_ARGV, "--outputs", str(outputs)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"batch.py exited {done.returncode}: {done.stderr[-2000:]}"


def runs_by_key(folder: Path) -> dict[str, list[Path]]:
    runs: dict[str, list[Path]] = {}
    for run in sorted(p for p in folder.iterdir() if p.is_dir()):
        settings = load_settings(run / SETTINGS_FILE)
        runs.setdefault(batch.request_key(settings["mode"], settings["request"]), []).append(run)
    return runs


def audio_digest(path: Path, scratch: Path) -> str:
    """The sha256 of the file's bytes with its tags (which carry settings.json, timings included)
    removed. Digests, not bytes, are compared: pytest explaining a mismatch of megabytes of audio
    (with CI set, a full diff) ran past the suite's timeout and looked like a hang."""
    import mutagen

    copy = scratch / path.name
    shutil.copyfile(path, copy)
    mutagen.File(copy).delete()
    return hashlib.sha256(copy.read_bytes()).hexdigest()


def sample_difference(path: Path, other: Path) -> str:
    """How far two takes are apart, in words, for a failure message."""
    import numpy as np
    import soundfile

    if path.suffix not in (".wav", ".flac"):
        return "compare the .wav of the same take"
    a, b = soundfile.read(path)[0], soundfile.read(other)[0]
    if a.shape != b.shape:
        return f"shapes {a.shape} and {b.shape}"
    return f"largest sample difference {float(np.abs(a - b).max()):.3g}"


def assert_same_runs(ours: Path, theirs: Path, scratch: Path) -> None:
    a, b = runs_by_key(ours), runs_by_key(theirs)
    assert sorted(a) == sorted(b)
    for key in a:
        for run, other in zip(sorted(a[key]), sorted(b[key]), strict=True):
            assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in other.iterdir())
            mine, yours = load_settings(run / SETTINGS_FILE), load_settings(other / SETTINGS_FILE)
            assert run.name.split("-", 2)[2] == other.name.split("-", 2)[2]  # the name less its time stamp
            for name in TIMING_FIELDS:
                mine.pop(name), yours.pop(name)
            assert mine == yours
            for file in sorted(run.iterdir()):
                if file.name != SETTINGS_FILE and audio_digest(file, scratch) != audio_digest(
                    other / file.name, scratch
                ):
                    pytest.fail(
                        f"{file} differs from {other / file.name}: {sample_difference(file, other / file.name)}"
                    )


def read_report(path: Path) -> dict[int, dict]:
    return {entry["number"]: entry for entry in json.loads(path.read_text())["requests"]}


def outcomes_in_words(report: dict[int, dict]) -> str:
    return "; ".join(f"#{n} {e['status']} x{e['attempts']} {e['error']}".strip() for n, e in sorted(report.items()))


@pytest.mark.slow
@pytest.mark.timeout(RAY_TEST_TIMEOUT_S)
def test_six_requests_make_the_single_process_batchs_run_folders(ray_cluster, tiny_backend, tmp_path):
    path = requests_file(tmp_path, SONGS)
    plain_batch_process(path, tmp_path / "plain")
    assert len(list((tmp_path / "plain").iterdir())) == 6
    on_ray = driver_studio(tiny_backend, tmp_path / "ray")
    status = ray_batch(on_ray, path, tmp_path / "report.json")
    report = read_report(tmp_path / "report.json")
    assert status == 0, outcomes_in_words(report)
    assert [report[n]["status"] for n in range(1, 7)] == ["done"] * 6
    assert report[3]["seed"] != report[4]["seed"]  # two random-seed lines, two songs
    assert len({entry["actor"] for entry in report.values()}) == 2  # both actors rendered
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert_same_runs(tmp_path / "ray", tmp_path / "plain", scratch)
    # A rerun finds every song saved and renders nothing.
    assert ray_batch(on_ray, path, tmp_path / "again.json") == 0
    assert [entry["status"] for entry in read_report(tmp_path / "again.json").values()] == ["skipped"] * 6
    assert len(list((tmp_path / "ray").iterdir())) == 6


@pytest.mark.slow
@pytest.mark.timeout(RAY_TEST_TIMEOUT_S)
def test_a_killed_actor_is_replaced_and_every_song_completes(ray_cluster, tiny_backend, tmp_path):
    killed: list[str] = []

    def kill_a_busy_actor(pool, outcomes) -> None:
        # After the first song is saved, kill an actor in the middle of its render.
        busy = next((name for name in pool.actors if name not in pool.idle), None)
        if not killed and busy is not None and any(o.status == "done" for o in outcomes):
            killed.append(busy)
            ray_cluster.kill(pool.actors[busy])

    studio = driver_studio(tiny_backend, tmp_path / "out")
    status = ray_batch(studio, requests_file(tmp_path, SONGS), tmp_path / "report.json", kill_a_busy_actor)
    report = read_report(tmp_path / "report.json")
    assert status == 0, outcomes_in_words(report)
    assert killed and all(entry["status"] == "done" for entry in report.values())
    assert any(entry["attempts"] == 2 for entry in report.values())  # the killed actor's song, once more
    assert len(runs_by_key(tmp_path / "out")) == 6 and len(list((tmp_path / "out").iterdir())) == 6


@pytest.mark.slow
@pytest.mark.timeout(RAY_TEST_TIMEOUT_S)
def test_an_interrupted_batch_resumes_with_the_missing_songs_only(ray_cluster, tiny_backend, tmp_path):
    def interrupt_after_two(pool, outcomes) -> None:
        if sum(o.status == "done" for o in outcomes) >= 2:
            raise KeyboardInterrupt

    path = requests_file(tmp_path, SONGS)
    studio = driver_studio(tiny_backend, tmp_path / "out")
    assert ray_batch(studio, path, tmp_path / "first.json", interrupt_after_two) == 130
    first = read_report(tmp_path / "first.json")
    saved = [n for n, entry in first.items() if entry["status"] == "done"]
    assert len(saved) >= 2 and {entry["status"] for entry in first.values()} <= {"done", "stopped"}
    assert len(list((tmp_path / "out").iterdir())) == len(saved)  # nothing half-written, no staging folder
    status = ray_batch(studio, path, tmp_path / "second.json")
    second = read_report(tmp_path / "second.json")
    assert status == 0, outcomes_in_words(second)
    assert sorted(n for n, entry in second.items() if entry["status"] == "skipped") == sorted(saved)
    assert all(second[n]["status"] == "done" for n in second if n not in saved)
    assert len(list((tmp_path / "out").iterdir())) == 6


@pytest.mark.slow
@pytest.mark.timeout(RAY_TEST_TIMEOUT_S)
def test_a_bad_request_is_reported_and_the_others_complete(ray_cluster, tmp_path, capsys):
    not_audio = tmp_path / "song.wav"
    not_audio.write_text("not a song")
    songs = [SONGS[0], {"mode": "cover", "prompt": "a cover", "src_audio": str(not_audio), "seed": 3}, SONGS[1]]
    out, report_path = tmp_path / "out", tmp_path / "report.json"
    argv = [str(requests_file(tmp_path, songs)), "--ray", "auto", "--actors", "2", "--report", str(report_path)]
    status = batch.main([*argv, *ACTOR_ARGV, "--outputs", str(out)])  # the command line, on this cluster
    report = read_report(report_path)
    assert status == 1, outcomes_in_words(report)
    assert report[1]["status"] == report[3]["status"] == "done"
    assert report[2]["status"] == "failed" and "Source song" in report[2]["error"] and report[2]["attempts"] == 1
    assert sorted(p.name for p in out.iterdir()) == sorted([report[1]["run_id"], report[3]["run_id"]])
    table = capsys.readouterr().out
    assert "failed" in table and report[1]["run_id"] in table


@pytest.mark.slow
@pytest.mark.timeout(RAY_TEST_TIMEOUT_S)
def test_actors_the_cluster_cannot_start_fail_fast_in_words(ray_cluster):
    from serving.ray_batch import Pool, PoolError

    pool = Pool(ray_cluster, ACTOR_ARGV, 1, {"num_cpus": 3.0})  # the cluster has two
    try:
        with pytest.raises(PoolError, match=r"1 of 1 Ray actors did not start within 2 s .*'num_cpus': 3\.0"):
            pool.wait_ready(timeout_s=2.0)
    finally:
        pool.stop()


@pytest.mark.slow
@pytest.mark.timeout(RAY_TEST_TIMEOUT_S)
def test_a_song_past_its_time_limit_is_retried_on_a_fresh_actor_then_reported(ray_cluster, tiny_backend, tmp_path):
    from serving.ray_batch import RayOptions, run_on_ray

    # A minute-long song of eight steps takes seconds even on the tiny model; the loop looks every
    # 0.2 s at the soonest: each attempt is cut off, its actor replaced, and the song reported.
    long_song = {"prompt": "a long one", "seed": 5, "audio_duration": 60, "num_inference_steps": 8}
    options = RayOptions(argv=ACTOR_ARGV, actors=1, report=tmp_path / "r.json", song_timeout_s=0.001)
    studio = driver_studio(tiny_backend, tmp_path / "out")
    assert run_on_ray(studio, batch.read_requests(requests_file(tmp_path, [long_song])), options) == 1
    entry = read_report(tmp_path / "r.json")[1]
    assert entry["status"] == "failed" and entry["attempts"] == 2, entry
    assert "still rendering after 0.001 s" in entry["error"]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_random_seeds_resolve_from_the_request_and_its_place(tmp_path):
    requests = batch.read_requests(requests_file(tmp_path, SONGS))
    first, again = batch.plan_batch(requests), batch.plan_batch(requests)
    assert [item.request.seed for item in first] == [item.request.seed for item in again]
    assert first[2].request.seed != first[3].request.seed and first[0].request.seed == 11
    assert len({item.key for item in first}) == 6


def test_a_rerun_skips_saved_runs_counting_identical_lines(studio, tmp_path):
    requests = batch.read_requests(requests_file(tmp_path, [SONGS[0], SONGS[0], SONGS[1]]))
    first = batch.run_batch(studio, requests[:1])
    assert len(first) == 1
    todo, done = batch.split_done(batch.plan_batch(requests, studio.backend.normalise), studio.store)
    assert [item.number for item in done] == [1] and [item.number for item in todo] == [2, 3]


def test_actors_take_a_gpu_each_or_a_share_of_the_cpus():
    from serving.ray_batch import actor_resources

    assert actor_resources({"CPU": 16, "GPU": 4}, None) == (4, {"num_gpus": 1.0, "num_cpus": 1.0})
    assert actor_resources({"CPU": 8}, None) == (8, {"num_cpus": 1.0})
    assert actor_resources({"CPU": 8}, 2) == (2, {"num_cpus": 4.0})
    assert actor_resources({"CPU": 2}, 4) == (4, {"num_cpus": 0.5})


def test_actors_and_report_need_ray(tmp_path, capsys):
    path = requests_file(tmp_path, SONGS[:1])
    assert batch.main([str(path), "--actors", "2"]) == 2
    assert batch.main([str(path), "--ray", "auto", "--actors", "0"]) == 2
    assert "--actors" in capsys.readouterr().err


def test_the_plain_batch_and_the_page_never_import_ray():
    code = "import sys, batch, app, serving.cli; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
