"""The Train tab against a stranger with a script: the disk and memory a dataset may take.

Reading uploaded songs copies them into a workspace; a client that brings no session gets a fresh
workspace each time, so one upload read again and again would fill the disk (off a Space nothing
was ever removed). A sample every step of a long run wrote 3.8 MB a step. A manifest naming one
song a thousand times encoded it a thousand times and held a thousand copies in memory; a 4 MB
dataset.csv of one-letter lines was read whole (two million rows) before the count was refused.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import gradio as gr
import pytest
from test_train_tab import write_song

from backend import Backend, DeviceInfo, RunControl
from checkpoints import resolve_model
from outputs import OutputStore
from studio import Studio
from training.dataset import clips_from_rows, rows_from_table
from training.run import SAMPLES_SUBDIR, TrainJob
from ui.runs import ActiveRuns
from ui.train_tab import FOLDER_PREFIX, WORKSPACE_KEEP_S, TrainHandlers


@pytest.fixture
def upload(tmp_path) -> list[str]:
    """What a browser uploads: one 6 s song and its caption."""
    folder = tmp_path / "upload"
    folder.mkdir()
    song = write_song(folder / "song.wav", 330.0)
    (folder / "song_prompt.txt").write_text("warm tape piano", encoding="utf-8")
    return [str(song), str(folder / "song_prompt.txt")]


@pytest.fixture(scope="module")
def tiny_studio(cache_dir, tmp_path_factory) -> Studio:
    backend = Backend(resolve_model("tiny", cache_dir=cache_dir), device=DeviceInfo("cpu", "float32"))
    root = tmp_path_factory.mktemp("security-train")
    return Studio(backend=backend, store=OutputStore(root / "outputs"), lora_store=root / "loras")


def song_bytes(files: list[str]) -> int:
    return sum(max(Path(f).stat().st_size, 4096) for f in files)


def test_one_upload_read_in_fresh_sessions_stops_at_the_budget(upload, tmp_path):
    handlers = TrainHandlers(None, ActiveRuns(), root=tmp_path / "workspaces")  # reading needs no model
    handlers.max_uploaded_bytes = int(2.5 * song_bytes(upload))
    first = handlers.read_songs(upload, "", None)[1]
    handlers.read_songs(upload, "", None)  # a script with a new session id: a second copy
    with pytest.raises(gr.Error, match=r"do not fit: the studio already holds .* MB of uploaded training songs"):
        handlers.read_songs(upload, "", None)  # a third would pass the budget: refused before copying
    copies = list((tmp_path / "workspaces").glob("*/songs/song.wav"))
    assert len(copies) == 2
    # A session reading its songs again replaces its own copy: never refused by itself.
    assert handlers.read_songs(upload, "", first)[1]["token"] == first["token"]


def test_abandoned_upload_workspaces_are_removed_off_a_space_too_but_a_folders_is_kept(upload, tmp_path):
    root = tmp_path / "workspaces"
    old = time.time() - WORKSPACE_KEEP_S - 60
    abandoned, folders = root / "0123456789abcdef", root / f"{FOLDER_PREFIX}0123456789abcdef"
    for workspace in (abandoned, folders):
        (workspace / "songs").mkdir(parents=True)
        (workspace / "songs" / "song.wav").write_bytes(b"RIFF")
        for path in (workspace / "songs" / "song.wav", workspace / "songs", workspace):
            os.utime(path, (old, old))
    TrainHandlers(None, ActiveRuns(), root=root).read_songs(upload, "", None)
    assert not abandoned.exists()
    assert folders.is_dir()  # this machine's folder: its stopped run resumes after a reload


def test_a_sample_every_step_keeps_only_the_newest_samples_on_disk(tiny_studio, upload, tmp_path):
    handlers = TrainHandlers(tiny_studio, ActiveRuns(), root=tmp_path / "workspaces")
    table, dataset, _ = handlers.read_songs(upload, "", None)
    rows = rows_from_table(table)
    clips = clips_from_rows(Path(dataset["root"]), rows)
    settings = handlers.settings({"steps": 4, "rank": 4, "alpha": 4})
    job = TrainJob.make(tiny_studio, clips, rows, settings, {"sample_every": 1}, handlers.root / dataset["token"])
    job.keep_samples = 2
    events: list[tuple] = []
    job.run(RunControl(), False, events.append)
    assert events[-1][0] == "done", events[-1]
    assert sum(kind == "sample" for kind, _ in events) == 4  # every sample still reaches the page
    kept = sorted(path.name for path in (job.out_dir / SAMPLES_SUBDIR).iterdir())
    assert kept == ["step-000003.wav", "step-000004.wav"]
    assert [path.name for path in job.samples] == kept


def test_a_song_named_many_times_is_encoded_and_held_once_and_memory_is_bounded(tiny_studio, upload, tmp_path):
    from training.prepare import prepare

    handlers = TrainHandlers(tiny_studio, ActiveRuns(), root=tmp_path / "workspaces")
    table, dataset, _ = handlers.read_songs(upload, "", None)
    rows = rows_from_table(table * 50)  # a manifest naming one upload 50 times: one encode's worth of memory
    clips = clips_from_rows(Path(dataset["root"]), rows)
    pipe = tiny_studio.backend.load()
    report = prepare(pipe, clips)
    assert report.encoded == 1 and len(report.clips) == 50
    assert all(clip.tensors is report.clips[0].tensors for clip in report.clips)
    one = next(report.cache_dir.glob("*.safetensors")).stat().st_size
    with pytest.raises(ValueError, match=r"prepared songs take .* GB, over the .* GB a run holds in memory"):
        prepare(pipe, clips + clips_from_rows(Path(dataset["root"]), rows_from_table([[*table[0][:1], "other"]])),
                max_bytes=int(1.5 * one))  # fmt: skip


def test_a_csv_of_two_million_rows_is_refused_without_reading_them_all(tmp_path):
    import tracemalloc

    from training.dataset import MAX_CLIPS, MAX_MANIFEST_BYTES, DatasetError, dataset_rows

    rows = MAX_MANIFEST_BYTES // 2 - 10
    (tmp_path / "dataset.csv").write_bytes(b"audio\n" + b"\n".join([b"x"] * rows))  # just under 4 MB
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match=f"songs; the limit is {MAX_CLIPS:,}"):
            dataset_rows(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 * 1024**2  # the file's text and a thousand rows; all of them took 350 MB
