from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import soundfile as sf
from mutagen.flac import FLAC
from mutagen.id3 import ID3
from mutagen.mp3 import MP3
from mutagen.wave import WAVE

from export import WRITERS, title_from_prompt
from outputs import SETTINGS_FILE, STAGING_PREFIX, STALE_STAGING_S, OutputStore, load_settings

SR = 48_000


def sine(seconds: float = 1.0, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    tone = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([tone, -tone])


def settings(prompt: str = "Warm lofi beat, dusty drums", lyrics: str = "[verse]\nhello there") -> dict:
    return {"mode": "generate", "request": {"prompt": prompt, "lyrics": lyrics, "seed": 7}}


def test_run_folder_holds_every_format_and_settings(tmp_path):
    store = OutputStore(tmp_path)
    run = store.save_run(settings(), np.stack([sine(), sine(freq=220.0)]), [7, 8])
    assert run.folder.parent == tmp_path and run.folder.is_dir()
    assert sorted(p.name for p in run.folder.iterdir()) == sorted(
        [SETTINGS_FILE] + [f"take{i}.{fmt}" for i in (1, 2) for fmt in ("wav", "flac", "mp3")]
    )
    saved = json.loads(run.settings_path.read_text())
    assert saved["takes"] == [
        {"seed": 7, "files": {"wav": "take1.wav", "flac": "take1.flac", "mp3": "take1.mp3"}},
        {"seed": 8, "files": {"wav": "take2.wav", "flac": "take2.flac", "mp3": "take2.mp3"}},
    ]
    assert saved["request"]["prompt"] == "Warm lofi beat, dusty drums"
    assert not list(tmp_path.glob(f"{STAGING_PREFIX}*"))


def test_wav_and_flac_keep_the_samples(tmp_path):
    audio = sine()
    run = OutputStore(tmp_path).save_run(settings(), audio[None], [1])
    for fmt in ("wav", "flac"):
        data, rate = sf.read(run.takes[0].files[fmt], dtype="float32")
        assert rate == SR and data.shape == (SR, 2)
        assert np.max(np.abs(data.T - audio)) < 2**-22  # 24-bit quantisation


def test_files_carry_title_lyrics_seed_and_settings(tmp_path):
    run = OutputStore(tmp_path).save_run(settings(), sine()[None], [7])
    files = run.takes[0].files

    mp3 = ID3(files["mp3"])
    assert str(mp3["TIT2"]) == "Warm lofi beat, dusty drums"
    assert str(mp3["TPE1"]) == "ACE Music Studio"
    assert mp3.getall("USLT")[0].text == "[verse]\nhello there"
    assert str(mp3["TXXX:seed"]) == "7"
    assert json.loads(str(mp3["TXXX:settings"]))["request"]["seed"] == 7
    assert MP3(files["mp3"]).info.bitrate == 320_000
    assert MP3(files["mp3"]).info.sample_rate == SR

    flac = FLAC(files["flac"])
    assert flac["TITLE"] == ["Warm lofi beat, dusty drums"]
    assert flac["LYRICS"] == ["[verse]\nhello there"]
    assert flac["SEED"] == ["7"]

    wav = WAVE(files["wav"])
    assert str(wav.tags["TIT2"]) == "Warm lofi beat, dusty drums"
    assert str(wav.tags["TXXX:seed"]) == "7"


def test_a_failing_write_leaves_no_folder(tmp_path):
    def disk_full(path, audio, tags):
        raise OSError(28, "No space left on device")

    store = OutputStore(tmp_path, writers={**WRITERS, "mp3": disk_full})
    with pytest.raises(OSError, match="No space left"):
        store.save_run(settings(), sine()[None], [1])
    assert list(tmp_path.iterdir()) == []


def test_same_second_runs_get_distinct_folders(tmp_path):
    store = OutputStore(tmp_path)
    first = store.save_run(settings(), sine(0.1)[None], [5])
    second = store.save_run(settings(), sine(0.1)[None], [5])
    assert first.folder != second.folder
    assert first.folder.is_dir() and second.folder.is_dir()


def test_stale_staging_folders_are_cleaned(tmp_path):
    stale = tmp_path / f"{STAGING_PREFIX}old"
    fresh = tmp_path / f"{STAGING_PREFIX}in-progress"
    stale.mkdir()
    fresh.mkdir()
    old = time.time() - STALE_STAGING_S - 10
    os.utime(stale, (old, old))
    OutputStore(tmp_path).save_run(settings(), sine(0.1)[None], [1])
    assert not stale.exists()
    assert fresh.exists(), "a staging folder another process is still writing must survive"


def test_load_settings_from_path_and_text(tmp_path):
    run = OutputStore(tmp_path).save_run(settings(), sine(0.1)[None], [3])
    from_path = load_settings(run.settings_path)
    from_text = load_settings(run.settings_path.read_text())
    assert from_path == from_text
    assert from_path["request"]["seed"] == 7


@pytest.mark.parametrize(
    ("text", "message"),
    [("{not json", "not valid JSON"), ('{"mode": "generate"}', "no 'request' section"), ("[1, 2]", "no 'request'")],
)
def test_load_settings_refuses_what_is_not_ours(text, message):
    with pytest.raises(ValueError, match=message):
        load_settings(text)


def test_title_from_prompt():
    assert title_from_prompt("") == "Untitled"
    assert title_from_prompt("\n  dreamy pop\nmore") == "dreamy pop"
    long = title_from_prompt("word " * 40)
    assert len(long) <= 61 and long.endswith("…")


def _png(path, size=(4, 4)) -> str:
    """A real PNG made with nothing but zlib: 4x4 grey pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\x80" * size[0] for _ in range(size[1]))
    header = struct.pack(">IIBBBBB", *size, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return str(path)


def test_cover_art_is_embedded_in_every_format(studio, tmp_path):
    from mutagen.flac import FLAC
    from mutagen.id3 import ID3
    from mutagen.oggopus import OggOpus
    from mutagen.wave import WAVE

    from backend import RunControl
    from modes import GenerateRequest

    cover = _png(tmp_path / "cover.png")
    request = GenerateRequest(prompt="with art", audio_duration=10, seed=1, opus=True, cover_image=cover)
    run = studio.generate(request, RunControl())
    files = run.takes[0].files
    art = (tmp_path / "cover.png").read_bytes()
    assert ID3(files["mp3"]).getall("APIC")[0].data == art
    assert WAVE(files["wav"]).tags.getall("APIC")[0].data == art
    assert FLAC(files["flac"]).pictures[0].data == art
    assert "metadata_block_picture" in OggOpus(files["opus"])
    # kept in the run, so Apply settings restores it
    assert (run.folder / "cover.png").read_bytes() == art


def test_a_cover_that_is_not_an_image_is_refused_before_the_model(studio, tmp_path):
    from backend import RunControl
    from modes import GenerateRequest

    fake = tmp_path / "cover.png"
    fake.write_text("not an image")
    steps = []
    with pytest.raises(ValueError, match=r"cover_image: 'cover\.png' is not a PNG or JPEG"):
        studio.generate(GenerateRequest(prompt="x", cover_image=str(fake)), RunControl(lambda f, m: steps.append(m)))
    assert steps == []


def test_a_shared_studio_names_runs_with_a_random_token(tmp_path, monkeypatch):
    """On a Space every run's files are served to whoever names their path, so a run id there
    cannot be rebuilt from its time, prompt and seed."""
    import re

    from serving.cli import make_studio, parse_args

    private = OutputStore(tmp_path / "shared", private_ids=True)
    ids = {private.save_run(settings(), sine()[None], [7]).run_id for _ in range(2)}
    assert len(ids) == 2 and all(re.fullmatch(r"\d{8}-\d{6}-warm-lofi-beat-dusty-drums-7-[0-9a-f]{16}", i) for i in ids)
    assert OutputStore(tmp_path / "own").save_run(settings(), sine()[None], [7]).run_id.endswith("-dusty-drums-7")
    args = ["--model", "tiny", "--outputs", str(tmp_path / "space"), "--planner", "none", "--lyrics-model", "none"]
    monkeypatch.setenv("SPACE_ID", "someone/studio")
    assert make_studio(parse_args(args)).store.private_ids
    monkeypatch.delenv("SPACE_ID")
    assert not make_studio(parse_args(args)).store.private_ids
