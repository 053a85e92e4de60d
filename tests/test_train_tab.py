"""The Train tab's handlers on the tiny model, called as the page calls them: three uploaded songs
(ACE-Step v1's three files each) read into the table, checked, trained a few steps with a loss
curve and samples, the adapter in the LoRA store and on the stack; a LoKr the same way; Stop then
Resume; a bad song refused with its reason on the page; a folder path refused to strangers."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
from safetensors.torch import load_file

from backend import Backend, DeviceInfo, RunControl
from checkpoints import resolve_model
from modes import GenerateRequest
from outputs import OutputStore
from studio import Studio
from ui.runs import ActiveRuns
from ui.train_tab import DEFAULTS, TRAIN_LANE, TrainHandlers, build_train_tab

SR = 48_000  # Hz


def write_song(path: Path, freq: float, level: float = 0.3, seconds: float = 6.0) -> Path:
    t = np.arange(int(SR * seconds)) / SR
    mono = level * np.sin(2 * np.pi * freq * t)
    sf.write(path, np.stack([mono, mono], 1).astype(np.float32), SR)
    return path


@pytest.fixture(scope="module")
def uploads(tmp_path_factory) -> list[str]:
    """What a browser uploads: three songs, their captions, one lyrics file."""
    folder = tmp_path_factory.mktemp("upload")
    files = []
    for i in range(3):
        files.append(str(write_song(folder / f"take {i}.wav", 220.0 * (i + 1))))
        prompt = folder / f"take {i}_prompt.txt"
        prompt.write_text(f"lofi piano, tape hiss, {i}", encoding="utf-8")
        files.append(str(prompt))
    lyrics = folder / "take 1_lyrics.txt"
    lyrics.write_text("[verse]\nla la la", encoding="utf-8")
    return [*files, str(lyrics)]


@pytest.fixture(scope="module")
def train_studio(cache_dir, tmp_path_factory):
    backend = Backend(resolve_model("tiny", cache_dir=cache_dir), device=DeviceInfo("cpu", "float32"))
    root = tmp_path_factory.mktemp("tab-studio")
    return Studio(backend=backend, store=OutputStore(root / "outputs"), lora_store=root / "loras")


def handlers_for(studio: Studio, tmp_path: Path) -> TrainHandlers:
    return TrainHandlers(studio, ActiveRuns(), root=tmp_path / "workspaces")


FORM = dict(trigger="tapewarm", name="tape warm", adapter="lora", rank=8, alpha=16, learning_rate=1e-3, seed=3)


def run_to_end(handlers: TrainHandlers, table, dataset, **changes) -> list[tuple]:
    return list(handlers.train(table, dataset, "", **{**FORM, **changes}))


def take(studio: Studio, **changes) -> np.ndarray:
    values = dict(prompt="lofi piano", audio_duration=10, seed=3, num_inference_steps=2, wav_bit_depth="32f")
    run = studio.generate(GenerateRequest(**{**values, **changes}), RunControl())
    return sf.read(run.takes[0].files["wav"], dtype="float32")[0]


def test_songs_in_checked_trained_and_the_adapter_on_the_stack(train_studio, uploads, tmp_path):
    handlers = handlers_for(train_studio, tmp_path)
    table, dataset, note = handlers.read_songs(uploads, "", None)
    assert "3 songs read" in note
    assert [row[0] for row in table] == ["take_0.wav", "take_1.wav", "take_2.wav"]  # safe names in the workspace
    assert table[1][1:3] == ["lofi piano, tape hiss, 1", "[verse]\nla la la"] and table[0][2] == "[Instrumental]"
    verdict = handlers.check(table, dataset, "lora", 8)
    assert verdict.count("✅") == 3 and "ready (6.0 s)" in verdict and "All 3 songs are ready" in verdict
    assert "About **" in verdict and "a copy of the DiT to train" in verdict  # the memory estimate

    plain = take(train_studio)
    updates = run_to_end(handlers, table, dataset, steps=4, sample_every=2)
    progress = [u[0] for u in updates if isinstance(u[0], str)]
    assert any("Preparing 3 songs" in p for p in progress) and any("steps/s · ETA" in p for p in progress)
    curve = updates[-1][1]
    assert list(curve["step"]) == [1, 2, 3, 4] and np.isfinite(curve["loss"]).all()
    samples = [u[2] for u in updates if isinstance(u[2], tuple)]
    assert len(samples) == 2 and samples[0][0] == SR and samples[0][1].shape == (10 * SR, 2)  # steps 2 and 4
    done, loras = updates[-1][3], updates[-1][4]
    assert "**tape warm** is in your LoRA store and on the stack" in done and "tapewarm" in done

    entry = train_studio.lora_stack().find("tape warm")
    assert loras == f"{entry.sha256[:16]}:1" and entry.trigger_words == ("tapewarm",)
    assert entry.info.kind == "lora" and entry.info.alpha == 16
    records = list((train_studio.lora_stack().store_dir / "training").glob(f"{entry.sha256[:16]}-*.json"))
    assert len(records) == 1 and '"trigger_word": "tapewarm"' in records[0].read_text()
    styled = take(train_studio, loras=loras)
    assert not np.array_equal(styled, plain)
    np.testing.assert_array_equal(take(train_studio), plain)  # the stack emptied: the base output, bit for bit


def test_a_lokr_from_the_tab_loads_into_the_stack(train_studio, uploads, tmp_path):
    handlers = handlers_for(train_studio, tmp_path)
    table, dataset, _ = handlers.read_songs(uploads, "", None)
    plain = take(train_studio)  # the stack empty (a LoRA from the test before may be loaded, disabled)
    updates = run_to_end(handlers, table, dataset, adapter="lokr", name="tape lokr", steps=2, learning_rate=3e-3)
    assert "**tape lokr** is in your LoRA store" in updates[-1][3]
    entry = train_studio.lora_stack().find("tape lokr")
    assert entry.info.kind == "lokr" and (entry.info.rank, entry.info.alpha) == (8, 16)
    assert not np.array_equal(take(train_studio, loras=updates[-1][4]), plain)
    np.testing.assert_array_equal(take(train_studio), plain)  # LoKr loaded, stack empty: the base output


def test_stop_keeps_the_checkpoint_and_resume_reaches_the_uninterrupted_weights(train_studio, uploads, tmp_path):
    handlers = handlers_for(train_studio, tmp_path)
    table, dataset, _ = handlers.read_songs(uploads, "", None)
    # A sample every step: the run waits on it, so Stop lands mid-run, as a person's click would.
    stream = handlers.train(table, dataset, "", **{**FORM, "steps": 6, "name": "tape resume", "sample_every": 1})
    for update in stream:
        if isinstance(update[0], str) and update[0].startswith("Step **"):
            handlers.runs.cancel("anonymous", TRAIN_LANE)  # what Stop does for this session
    stopped = update  # the stream's last update
    assert stopped[0].startswith("Stopped at step ") and "Resume" in stopped[0]
    step = int(stopped[0].split("step ")[1].split("/")[0])
    assert 1 <= step < 6 and len(stopped[1]) == step
    resumed = run_to_end(handlers, table, dataset, steps=6, name="tape resume", resume=True)
    assert list(resumed[-1][1]["step"]) == [1, 2, 3, 4, 5, 6]  # the whole curve, the stopped part included
    assert "**tape resume** is in your LoRA store" in resumed[-1][3]

    # The same weights as one uninterrupted run without samples (samples touch no random state).
    other = handlers_for(train_studio, tmp_path / "other")
    table2, dataset2, _ = other.read_songs(uploads, "", None)
    whole = run_to_end(other, table2, dataset2, steps=6, name="tape whole")
    assert list(whole[-1][1]["loss"]) == list(resumed[-1][1]["loss"])
    a, b = (load_file(str(h.root / d["token"] / "run/adapter/adapter_model.safetensors")) for h, d in
            ((handlers, dataset), (other, dataset2)))  # fmt: skip
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_a_bad_song_is_refused_with_its_reason_on_the_page(train_studio, uploads, tmp_path):
    handlers = handlers_for(train_studio, tmp_path)
    quiet = write_song(tmp_path / "quiet.wav", 330.0, level=0.0)
    short = write_song(tmp_path / "short.wav", 330.0, seconds=2.0)
    table, dataset, _ = handlers.read_songs([*uploads, str(quiet), str(short)], "", None)
    assert [row[0] for row in table][:2] == ["quiet.wav", "short.wav"]
    table[0][1], table[1][1] = "a quiet one", "a short one"  # captions typed in the table
    table[2][1] = ""  # take_0.wav's caption cleared
    verdict = handlers.check(table, dataset, "lora", 8)
    assert "❌ 'take_0.wav': no caption" in verdict and "✅ take_1.wav: ready" in verdict
    assert "❌ quiet.wav: silent" in verdict and "❌ short.wav: 2.0 s long" in verdict
    assert "Nothing was trained" in verdict and "About **" not in verdict  # no model time for a bad dataset
    with pytest.raises(gr.Error, match="no caption"):
        run_to_end(handlers, table, dataset, steps=1)
    with pytest.raises(gr.Error, match="Rank: a whole number from 1 to 256"):
        run_to_end(handlers, table, dataset, steps=1, rank=0.5 * 1000)
    settings = handlers.settings  # the form's numbers: a typed value is refused, never replaced
    with pytest.raises(ValueError, match="Learning rate: above 0 and at most 1, got 0"):
        settings({"learning_rate": 0})
    with pytest.raises(ValueError, match=r"Alpha: a whole number, got 2\.5"):
        settings({"alpha": 2.5})
    assert settings({"steps": ""}).steps is None and settings({}).learning_rate == DEFAULTS.learning_rate


def test_a_server_folder_is_read_only_for_this_machine(train_studio, tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    folder.mkdir()
    write_song(folder / "a.wav", 440.0)
    (folder / "a_prompt.txt").write_text("ambient pads", encoding="utf-8")
    handlers = handlers_for(train_studio, tmp_path)
    table, dataset, _ = handlers.read_songs(None, str(folder), None)  # this machine's own user
    assert table[0][:2] == ["a.wav", "ambient pads"] and dataset["root"] == str(folder.resolve())
    again = handlers_for(train_studio, tmp_path).read_songs(None, str(folder), None)[1]  # after a reload
    assert again["token"] == dataset["token"]  # the same workspace: its checkpoint resumes

    def request(peer: str, **headers: str) -> SimpleNamespace:
        return SimpleNamespace(client=SimpleNamespace(host=peer), headers=headers)

    local = request("127.0.0.1", host="127.0.0.1:7860")
    assert handlers.read_songs(None, str(folder), None, local)[0] == table  # this machine's own browser
    assert handlers.read_songs(None, str(folder), None, request("::1", host="[::1]:7860"))[0] == table
    for stranger in (
        request("192.168.1.20", host="192.168.1.5:7860"),  # from the network
        request("127.0.0.1", host="studio.example.org", **{"x-forwarded-for": "203.0.113.9"}),  # a reverse proxy
        request("127.0.0.1", host="abc.trycloudflare.com"),  # a tunnel
    ):
        with pytest.raises(gr.Error, match="only when the studio runs on your own computer"):
            handlers.read_songs(None, "/etc", None, stranger)
    monkeypatch.setenv("SPACE_ID", "someone/studio")
    with pytest.raises(gr.Error, match="only when the studio runs on your own computer"):
        handlers.read_songs(None, str(folder), None, local)
    with pytest.raises(gr.Error, match="Read the songs first"):
        run_to_end(handlers, [["a.wav", "x", "", "", "", ""]], None, steps=1)


def test_describe_fills_only_the_empty_captions_and_lyrics(thinking_studio, uploads, tmp_path):
    handlers = TrainHandlers(thinking_studio, ActiveRuns(), tmp_path / "ws", describe_limits={"max_lyrics_tokens": 8})
    table, dataset, _ = handlers.read_songs(uploads, "", None)
    table[0][1] = ""  # take_0: no caption, and no lyrics file (so "[Instrumental]", kept as it is)
    described = handlers.describe_songs(table, dataset)
    assert described[0][1].strip() and described[0][2] == "[Instrumental]"
    assert described[1][1:3] == table[1][1:3] and described[2][1:3] == table[2][1:3]  # typed texts are kept
    assert "✅ take_0.wav: ready" in handlers.check(described, dataset, "lora", 8)


def test_the_memory_estimate_grows_with_the_longest_song_and_names_its_parts(train_studio):
    from training.estimate import memory_estimate

    dit = train_studio.backend.load().transformer
    short, long = (memory_estimate(dit, "lora", 8, seconds, "cpu") for seconds in (10, 240))
    assert long.activation_bytes > 20 * short.activation_bytes and long.dit_bytes == short.dit_bytes
    assert memory_estimate(dit, "lora", 8, 240, "cuda").activation_bytes < long.activation_bytes  # checkpointing
    assert memory_estimate(dit, "lokr", 8, 10, "cpu").adapter_bytes < short.adapter_bytes
    words = long.words(free_bytes=1)
    assert "a copy of the DiT to train" in words and "**does not fit**" in words


def test_on_zerogpu_the_tab_checks_and_says_plainly_that_it_cannot_train(train_studio, uploads, tmp_path, monkeypatch):
    monkeypatch.setenv("SPACE_ID", "someone/studio")
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    handlers = handlers_for(train_studio, tmp_path)
    table, dataset, _ = handlers.read_songs(uploads, "", None)  # uploads are read there
    verdict = handlers.check(table, dataset, "lora", 8)
    assert "All 3 songs are ready" in verdict and "Training is not available on this ZeroGPU Space" in verdict
    assert "near 300 s" in verdict and "python -m training train" in verdict and "About **" not in verdict
    with pytest.raises(gr.Error, match="Training is not available on this ZeroGPU Space"):
        run_to_end(handlers, table, dataset, steps=1)
    with gr.Blocks():
        tab = build_train_tab(train_studio)
    assert not tab.train.visible and not tab.resume.visible and not tab.folder.visible
