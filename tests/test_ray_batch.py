"""Batch runs on Ray: a local two-CPU cluster started here, two actors with the tiny model.

The run folders must match the single-process batch's (audio bytes and settings.json, apart
from the fields that record when and how long), survive a killed actor, resume after Ctrl-C
and report a bad request without stopping the others.
"""

from __future__ import annotations

import contextlib
import json
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

# The Ray tests are slow: a cluster, five batches, over a minute on two shared cores.


@pytest.fixture(scope="module")
def ray_cluster(cache_dir, tiny_backend):
    """One local Ray cluster for the module: two CPUs, no dashboard (the tiny model is built first)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20)
    yield ray
    ray.shutdown()


def requests_file(tmp_path: Path, songs: list[dict]) -> Path:
    path = tmp_path / "requests.json"
    path.write_text(json.dumps([{"audio_duration": 10, "num_inference_steps": 2, **song} for song in songs]))
    return path


def ray_batch(studio: Studio, path: Path, report: Path, watch: Callable | None = None) -> int:
    from serving.ray_batch import RayOptions, run_on_ray

    options = RayOptions(argv=ACTOR_ARGV, actors=2, report=report, watch=watch)
    return run_on_ray(studio, batch.read_requests(path), options)


def driver_studio(tiny_backend, folder: Path) -> Studio:
    return Studio(backend=tiny_backend, store=OutputStore(folder))


@contextlib.contextmanager
def torch_threads(count: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def runs_by_key(folder: Path) -> dict[str, list[Path]]:
    runs: dict[str, list[Path]] = {}
    for run in sorted(p for p in folder.iterdir() if p.is_dir()):
        settings = load_settings(run / SETTINGS_FILE)
        runs.setdefault(batch.request_key(settings["mode"], settings["request"]), []).append(run)
    return runs


def audio_without_tags(path: Path, scratch: Path) -> bytes:
    """The file's bytes with its tags (which carry settings.json, timings included) removed."""
    import mutagen

    copy = scratch / path.name
    shutil.copyfile(path, copy)
    mutagen.File(copy).delete()
    return copy.read_bytes()


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
            for file in run.iterdir():
                if file.name != SETTINGS_FILE:
                    assert audio_without_tags(file, scratch) == audio_without_tags(other / file.name, scratch), file


def read_report(path: Path) -> dict[int, dict]:
    return {entry["number"]: entry for entry in json.loads(path.read_text())["requests"]}


@pytest.mark.slow
def test_six_requests_make_the_single_process_batchs_run_folders(ray_cluster, tiny_backend, tmp_path):
    path = requests_file(tmp_path, SONGS)
    plain = driver_studio(tiny_backend, tmp_path / "plain")
    with torch_threads(1):  # as each actor has (one CPU each): on a CPU the sums' order follows the threads
        assert len(batch.run_batch(plain, batch.read_requests(path))) == 6
    on_ray = driver_studio(tiny_backend, tmp_path / "ray")
    assert ray_batch(on_ray, path, tmp_path / "report.json") == 0
    report = read_report(tmp_path / "report.json")
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
def test_a_killed_actor_is_replaced_and_every_song_completes(ray_cluster, tiny_backend, tmp_path):
    killed: list[str] = []

    def kill_a_busy_actor(pool, outcomes) -> None:
        # After the first song is saved, kill an actor in the middle of its render.
        if not killed and any(o.status == "done" for o in outcomes):
            name = next(name for name in pool.actors if name not in pool.idle)
            killed.append(name)
            ray_cluster.kill(pool.actors[name])

    studio = driver_studio(tiny_backend, tmp_path / "out")
    assert ray_batch(studio, requests_file(tmp_path, SONGS), tmp_path / "report.json", kill_a_busy_actor) == 0
    report = read_report(tmp_path / "report.json")
    assert killed and all(entry["status"] == "done" for entry in report.values())
    assert any(entry["attempts"] == 2 for entry in report.values())  # the killed actor's song, once more
    assert len(runs_by_key(tmp_path / "out")) == 6 and len(list((tmp_path / "out").iterdir())) == 6


@pytest.mark.slow
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
    assert ray_batch(studio, path, tmp_path / "second.json") == 0
    second = read_report(tmp_path / "second.json")
    assert sorted(n for n, entry in second.items() if entry["status"] == "skipped") == sorted(saved)
    assert all(second[n]["status"] == "done" for n in second if n not in saved)
    assert len(list((tmp_path / "out").iterdir())) == 6


@pytest.mark.slow
def test_a_bad_request_is_reported_and_the_others_complete(ray_cluster, tmp_path, capsys):
    not_audio = tmp_path / "song.wav"
    not_audio.write_text("not a song")
    songs = [SONGS[0], {"mode": "cover", "prompt": "a cover", "src_audio": str(not_audio), "seed": 3}, SONGS[1]]
    out, report_path = tmp_path / "out", tmp_path / "report.json"
    argv = [str(requests_file(tmp_path, songs)), "--ray", "auto", "--actors", "2", "--report", str(report_path)]
    assert batch.main([*argv, *ACTOR_ARGV, "--outputs", str(out)]) == 1  # the command line, on this cluster
    report = read_report(report_path)
    assert report[1]["status"] == report[3]["status"] == "done"
    assert report[2]["status"] == "failed" and "Source song" in report[2]["error"] and report[2]["attempts"] == 1
    assert sorted(p.name for p in out.iterdir()) == sorted([report[1]["run_id"], report[3]["run_id"]])
    table = capsys.readouterr().out
    assert "failed" in table and report[1]["run_id"] in table


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
    todo, done = batch.split_done(batch.plan_batch(requests), studio.store)
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
