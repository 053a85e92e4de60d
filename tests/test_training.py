"""Training a LoRA or LoKr on the tiny model: a 3-clip dataset (10 s each, ACE-Step v1's three-file
layout) prepared once and cached, trained a few steps, saved in the official format, loaded into
the studio's stack; Stop then Resume against an uninterrupted run; every bad clip refused by name."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from backend import Backend, DeviceInfo, RunControl
from checkpoints import resolve_model
from lora.bundle import read_upload
from lora.header import LoraError
from modes import GenerateRequest
from outputs import OutputStore
from studio import Studio
from training import adapter
from training.dataset import DatasetError, read_dataset
from training.prepare import prepare
from training.trainer import TrainSettings, evaluation_loss, train

SR = 48_000  # Hz
FAST = dict(gradient_accumulation=1, warmup_steps=0, learning_rate=3e-3, seed=1)


def write_song(path: Path, seconds: float = 10.0, freq: float = 220.0, level: float = 0.3, rate: int = SR) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    noise = np.random.default_rng(int(freq)).standard_normal(t.size)
    mono = level * np.sin(2 * np.pi * freq * t) + level * 0.1 * noise
    sf.write(path, np.stack([mono, mono], 1).astype(np.float32), rate)
    return path


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("songs")
    for i in range(3):
        write_song(folder / f"song{i}.wav", freq=220.0 + 110 * i)
        (folder / f"song{i}_prompt.txt").write_text(f"lofi piano, warm tape, take {i}\n", encoding="utf-8")
        if i:
            (folder / f"song{i}_lyrics.txt").write_text("[verse]\nla la la\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def prepared(tiny_backend, dataset_dir):
    return prepare(tiny_backend.load(), read_dataset(dataset_dir), trigger_word="tapewarm")


def fresh_dit(tiny_backend):
    """A copy of the tiny DiT: training wraps its model in place, and the session's is shared."""
    return copy.deepcopy(tiny_backend.load().transformer)


def test_the_v1_three_file_folder_imports_as_is(dataset_dir):
    clips = read_dataset(dataset_dir)
    assert [c.name for c in clips] == ["song0.wav", "song1.wav", "song2.wav"]
    assert clips[0].caption == "lofi piano, warm tape, take 0" and clips[0].lyrics == "[Instrumental]"
    assert clips[1].lyrics == "[verse]\nla la la" and clips[1].language == "unknown"


def test_a_manifest_gives_language_bpm_and_key(tmp_path):
    write_song(tmp_path / "a.wav")
    rows = [{"audio": "a.wav", "caption": "jazz trio", "lyrics": "", "language": "fr", "bpm": 96, "keyscale": "Am"}]
    (tmp_path / "dataset.json").write_text(json.dumps(rows), encoding="utf-8")
    (clip,) = read_dataset(tmp_path)
    assert (clip.language, clip.bpm, clip.keyscale, clip.lyrics) == ("fr", 96, "A minor", "[Instrumental]")
    (tmp_path / "dataset.json").unlink()
    (tmp_path / "dataset.csv").write_text("audio,caption,bpm\na.wav,jazz trio,500\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"'a.wav': bpm: a whole number from 30 to 300, got '500'"):
        read_dataset(tmp_path)
    (tmp_path / "dataset.csv").write_text("audio,caption\n../a.wav,jazz\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="must be a file name inside the dataset folder"):
        read_dataset(tmp_path)


def test_each_bad_clip_is_refused_with_its_reason_before_any_model_time(tmp_path):
    write_song(tmp_path / "short.wav", seconds=2)
    write_song(tmp_path / "quiet.wav", level=0.0)
    write_song(tmp_path / "long.wav", seconds=241, rate=8_000)
    (tmp_path / "fake.wav").write_bytes(b"RIFF not really a wave file" * 10)
    write_song(tmp_path / "nocaption.wav")
    for name in ("short", "quiet", "long", "fake"):
        (tmp_path / f"{name}_prompt.txt").write_text("ambient", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"'nocaption\.wav': no caption"):
        read_dataset(tmp_path)
    (tmp_path / "nocaption.wav").unlink()

    with pytest.raises(DatasetError) as refused:  # no model: every clip is refused before one is needed
        prepare(object(), read_dataset(tmp_path), cache_dir=tmp_path / "cache")
    message = str(refused.value)
    assert "fake.wav' is not audio the studio can read" in message
    assert "long.wav is 4:01 long; the limit is 4:00" in message
    assert "quiet.wav: silent" in message
    assert "short.wav: 2.0 s long; a training clip needs at least 5 s" in message


def test_preparing_caches_latents_and_embeddings_and_a_second_run_does_no_vae_work(tiny_backend, dataset_dir, prepared):
    assert prepared.encoded == 3 and len(list(prepared.cache_dir.glob("*.safetensors"))) == 3
    first = prepared.clips[0].tensors
    assert first["target_latents"].shape[0] == 250  # 10 s at 25 latent frames per second
    assert first["context_latents"].shape[0] == 250 and first["encoder_hidden_states"].ndim == 2
    pipe = tiny_backend.load()
    calls = []
    hook = pipe.vae.register_forward_pre_hook(lambda *_: calls.append(1))
    encoder_hook = pipe.vae.encoder.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        again = prepare(pipe, read_dataset(dataset_dir), trigger_word="tapewarm")
    finally:
        hook.remove()
        encoder_hook.remove()
    assert again.encoded == 0 and calls == []
    for a, b in zip(again.clips, prepared.clips, strict=True):
        assert all(a.tensors[k].equal(b.tensors[k]) for k in a.tensors)
    other = prepare(pipe, read_dataset(dataset_dir)[:1], trigger_word="")  # another caption: prepared anew
    assert other.encoded == 1


@pytest.fixture(scope="module")
def trained(tiny_backend, prepared, tmp_path_factory):
    dit = fresh_dit(tiny_backend)
    out = tmp_path_factory.mktemp("trained")
    reports = []
    settings = TrainSettings(steps=30, **FAST)
    result = train(dit, prepared.clips, settings, out, on_step=reports.append, extra={"trigger_word": "tapewarm"})
    return result, dit, reports


def test_training_30_steps_lowers_the_loss(tiny_backend, prepared, trained):
    result, model, reports = trained
    before = evaluation_loss(fresh_dit(tiny_backend), prepared.clips)
    after = evaluation_loss(model, prepared.clips)
    assert after < before * 0.9, (before, after)
    assert np.mean(result.losses[-10:]) < np.mean(result.losses[:10])
    assert [r.step for r in reports] == list(range(1, 31)) and reports[-1].eta_s == 0
    assert all(r.steps_per_s > 0 and np.isfinite(r.loss) for r in reports)


@pytest.fixture(scope="module")
def lora_studio(cache_dir, tmp_path_factory):
    backend = Backend(resolve_model("tiny", cache_dir=cache_dir), device=DeviceInfo("cpu", "float32"))
    root = tmp_path_factory.mktemp("train-studio")
    return Studio(backend=backend, store=OutputStore(root / "outputs"), lora_store=root / "loras")


def take(studio: Studio, **changes) -> np.ndarray:
    values = dict(prompt="lofi piano", audio_duration=10, seed=3, num_inference_steps=2, wav_bit_depth="32f")
    run = studio.generate(GenerateRequest(**{**values, **changes}), RunControl())
    return sf.read(run.takes[0].files["wav"], dtype="float32")[0]


def test_the_saved_adapter_passes_the_studio_check_and_plays_at_its_trained_alpha(trained, lora_studio, tmp_path):

    result, model, _ = trained
    folder = result.adapter_dir
    config = json.loads((folder / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 8, 16)
    assert sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    upload = read_upload([folder / "adapter_model.safetensors", folder / "adapter_config.json"])
    plain = take(lora_studio)
    entry = lora_studio.add_lora(upload.weights, name="tapewarm", adapter_config=upload.adapter_config)
    assert entry.info.key_format == "peft" and entry.info.modules == 16  # q/k/v/o in self and cross attention, 2 layers
    assert set(entry.info.scales.values()) == {2.0}  # alpha / r = 16 / 8, as trained
    assert entry.trigger_words == ("tapewarm",)
    alone = tmp_path / "alone.safetensors"  # no adapter_config.json beside it: the file's metadata says
    shutil.copy(upload.weights, alone)
    assert lora_studio.lora_stack().check(alone).info.alpha == 16
    styled = take(lora_studio, loras=f"{entry.sha256[:12]}:1")
    assert not np.array_equal(styled, plain)
    np.testing.assert_array_equal(take(lora_studio), plain)  # an empty stack: the base output, bit for bit

    # The stack at weight 1 is the trained model, layer for layer.
    dit = lora_studio.backend.load().transformer
    _assert_stack_plays_as_trained(lora_studio, dit, model, entry, 0.75)


def _stop_at(step: int, control: RunControl):
    def on_step(report) -> None:
        if report.step == step:
            control.cancel()

    return on_step


@pytest.mark.parametrize("kind", ["lora", "lokr"])
def test_stop_then_resume_reaches_the_weights_of_an_uninterrupted_run(tiny_backend, prepared, tmp_path, kind):
    from safetensors.torch import load_file

    settings = TrainSettings(adapter=kind, steps=6, save_every=2, **{**FAST, "gradient_accumulation": 2})
    whole = train(fresh_dit(tiny_backend), prepared.clips, settings, tmp_path / "whole")
    control = RunControl()
    stopped = train(
        fresh_dit(tiny_backend), prepared.clips, settings, tmp_path / "split", control, _stop_at(3, control)
    )
    assert stopped.stopped and stopped.step == 3 and stopped.adapter_dir is None
    assert not (tmp_path / "split" / "adapter").exists()
    resumed = train(fresh_dit(tiny_backend), prepared.clips, settings, tmp_path / "split")
    assert not resumed.stopped and resumed.step == 6 and resumed.losses == whole.losses
    a = load_file(str(whole.adapter_dir / "adapter_model.safetensors"))
    b = load_file(str(resumed.adapter_dir / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert any(a[k].abs().sum() > 0 for k in a if "lora_B" in k or "lokr_w2" in k)
    other = TrainSettings(adapter=kind, steps=6, save_every=2, **{**FAST, "seed": 2})
    with pytest.raises(ValueError, match="was made with other settings"):
        train(fresh_dit(tiny_backend), prepared.clips, other, tmp_path / "split")


def test_a_lokr_run_lowers_the_loss_passes_the_check_and_plays_in_the_stack(
    tiny_backend, prepared, tmp_path, lora_studio
):

    model = fresh_dit(tiny_backend)
    result = train(model, prepared.clips, TrainSettings(adapter="lokr", steps=12, **FAST), tmp_path)
    assert evaluation_loss(model, prepared.clips) < evaluation_loss(fresh_dit(tiny_backend), prepared.clips)
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == "LOKR" and config["alpha"] == 16
    keys = load_keys(result.adapter_dir / "adapter_model.safetensors")
    assert any(".self_attn.q_proj.lokr_w1" in k for k in keys)
    weights = result.adapter_dir / "adapter_model.safetensors"
    lone = tmp_path / "lone" / "adapter_model.safetensors"  # without its config: refused in plain words
    lone.parent.mkdir()
    shutil.copy(weights, lone)
    with pytest.raises(LoraError, match=r"a LoKr needs its adapter_config\.json"):
        lora_studio.add_lora(lone)

    plain = take(lora_studio)
    entry = lora_studio.add_lora(weights, name="lokr-tape", adapter_config=config)
    assert entry.info.kind == "lokr" and entry.info.modules == 16 and (entry.info.rank, entry.info.alpha) == (8, 16)
    styled = take(lora_studio, loras=f"{entry.sha256[:12]}:1")
    assert not np.array_equal(styled, plain)
    np.testing.assert_array_equal(take(lora_studio), plain)  # an empty stack: the base output, bit for bit

    dit = lora_studio.backend.load().transformer  # at weight 1 the stack is the trained model, layer for layer
    _assert_stack_plays_as_trained(lora_studio, dit, model, entry, 0.5)


def test_a_lokr_whose_factors_do_not_fit_its_config_is_refused(tiny_backend, prepared, tmp_path, lora_studio):
    from safetensors.torch import load_file, save_file

    result = train(fresh_dit(tiny_backend), prepared.clips, TrainSettings(adapter="lokr", steps=1, **FAST), tmp_path)
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    tensors = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    key = next(k for k in tensors if k.endswith("self_attn.q_proj.lokr_w1"))
    tensors[key] = tensors[key].repeat(2, 1)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad))
    with pytest.raises(LoraError, match=r"layers\.0\.self_attn\.to_q'.*LoKr factors"):
        lora_studio.lora_stack().check(bad, adapter_config=config)
    tensors[key] = tensors[key][:4]
    tensors[key.replace("lokr_w1", "alpha")] = tensors[key].new_tensor(16.0)
    save_file(tensors, str(bad))
    with pytest.raises(LoraError, match=r"per-layer \.alpha scalars are not supported"):
        lora_studio.lora_stack().check(bad, adapter_config=config)
    for change, words in (({"r": 10_000}, "r must be a whole number"), ({"rank_pattern": {"x": 2}}, "per-layer")):
        with pytest.raises(LoraError, match=words):
            lora_studio.lora_stack().check(
                result.adapter_dir / "adapter_model.safetensors", adapter_config={**config, **change}
            )


def load_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return list(handle.keys())


def test_settings_are_checked_before_training(tiny_backend, prepared, tmp_path):
    with pytest.raises(ValueError, match="adapter: one of lora, lokr, got 'loha'"):
        train(fresh_dit(tiny_backend), prepared.clips, TrainSettings(adapter="loha"), tmp_path)
    assert adapter.official_key("base_model.model.layers.0.cross_attn.to_out.0.lora_A.weight") == (
        "base_model.model.layers.0.cross_attn.o_proj.lora_A.weight"
    )


def test_the_command_line_checks_then_trains_from_the_cache(dataset_dir, prepared, tmp_path, capsys, cache_dir):
    from training.__main__ import main

    assert main(["check", str(dataset_dir)]) == 0
    assert "3 songs, 0.5 minutes: ready to train" in capsys.readouterr().out
    argv = ["train", str(dataset_dir), "--model", "tiny", "--out", str(tmp_path), "--trigger", "tapewarm"]
    argv += ["--steps", "2", "--accumulation", "1", "--warmup", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "prepared 3 songs (0 encoded now" in out and "step 2/2  loss " in out and "ETA 0:00:00" in out
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    training = json.loads((tmp_path / "adapter" / "training.json").read_text())
    assert training["trigger_word"] == "tapewarm" and training["settings"]["steps"] == 2
    assert main([*argv[:-6], "--steps", "0"]) == 2
    assert "Steps: a whole number from 1" in capsys.readouterr().err

    # --store: the finished adapter kept in the studio's LoRA store (the studio lists and loads it from there).
    assert main([*argv, "--store", "--name", "tape warm"]) == 0
    assert "in the LoRA store as 'tape warm'" in capsys.readouterr().out
    sides = [json.loads(p.read_text()) for p in (cache_dir / "loras").glob("*.json")]
    side = next(s for s in sides if s["name"] == "tape_warm")
    assert side["trigger_words"] == ["tapewarm"] and side["adapter_config"]["lora_alpha"] == 16
    assert len(list((cache_dir / "loras" / "training").glob(f"{side['sha256'][:16]}-tape_warm.json"))) == 1


def _assert_stack_plays_as_trained(lora_studio, dit, model, entry, t: float) -> None:
    """The stack's DiT with ``entry`` at weight 1 gives the trained model's output at timestep ``t``."""
    import torch

    generator = torch.Generator().manual_seed(0)
    inputs = dict(
        hidden_states=torch.randn(1, 50, 8, generator=generator),
        timestep=torch.tensor([t]),
        timestep_r=torch.tensor([t]),
        encoder_hidden_states=torch.randn(1, 12, 32, generator=generator),
        context_latents=torch.randn(1, 50, 16, generator=generator),
        return_dict=False,
    )
    with lora_studio.backend.exclusive(), torch.no_grad():
        lora_studio.lora_stack().apply([(entry.name, 1.0)])
        loaded = dit(**inputs)[0]
        lora_studio.lora_stack().apply([])
        model.eval()
        trained_out = model(**inputs)[0]
    torch.testing.assert_close(loaded, trained_out, rtol=1e-5, atol=1e-6)
