"""The planner's size follows the GPU's memory (the official tiers) unless the user picks one."""

from __future__ import annotations

import pytest

from checkpoints import CPU_PLANNER, PLANNER_ENV_VAR, choose_planner
from serving.cli import gpu_memory_gb, make_studio, parse_args


@pytest.mark.parametrize(
    ("memory_gb", "size"),
    [(4.0, None), (6.0, None), (8.0, "0.6B"), (12.0, "0.6B"), (12.5, "1.7B"), (15.6, "4B"), (24.0, "4B"), (80, "4B")],
)
def test_the_planner_follows_gpu_memory(memory_gb, size, monkeypatch):
    monkeypatch.delenv(PLANNER_ENV_VAR, raising=False)
    choice = choose_planner(None, "cuda", memory_gb)
    assert choice.name == size
    assert (f"planner {size}" if size else "Think is off") in choice.reason
    assert f"{memory_gb:.1f} GB" in choice.reason


def test_the_users_pick_wins_over_memory(monkeypatch):
    monkeypatch.delenv(PLANNER_ENV_VAR, raising=False)
    assert choose_planner("4B", "cuda", 4.0).name == "4B"
    assert choose_planner("none", "cuda", 80.0).name is None
    monkeypatch.setenv(PLANNER_ENV_VAR, "/models/my-lm")
    assert choose_planner(None, "cuda", 4.0).name == "/models/my-lm"
    assert choose_planner("0.6B", "cuda", 4.0).name == "0.6B"  # the flag before the environment


def test_the_cpu_says_what_it_chose(monkeypatch):
    monkeypatch.delenv(PLANNER_ENV_VAR, raising=False)
    choice = choose_planner(None, "cpu", None)
    assert choice.name == CPU_PLANNER and "CPU" in choice.reason
    assert choose_planner(None, "mps", None).name == CPU_PLANNER  # memory unknown: as on the CPU
    assert choose_planner(None, "mps", 32.0).name == "4B"


def test_memory_overrides_try_a_tier_and_the_studio_says_its_choice(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv(PLANNER_ENV_VAR, raising=False)
    monkeypatch.setenv("MAX_CUDA_VRAM", "10")
    assert gpu_memory_gb("cuda") == 10.0 and gpu_memory_gb("cpu") is None
    args = ["--model", "tiny", "--device", "cpu", "--outputs", str(tmp_path), "--lyrics-model", "none"]
    studio = make_studio(parse_args([*args, "--planner", "none"]))
    assert studio.planner is None and "planner none: as asked" in capsys.readouterr().err
    studio = make_studio(parse_args(args))  # a tiny model keeps its tiny planner, said nothing about
    assert studio.planner is not None and "tiny" in studio.planner.source


def test_a_real_checkpoint_on_the_cpu_gets_the_small_planner_and_says_so(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv(PLANNER_ENV_VAR, raising=False)
    args = ["--model", "xl-turbo", "--device", "cpu", "--outputs", str(tmp_path), "--lyrics-model", "none"]
    studio = make_studio(parse_args(args))  # nothing loads until the first run
    assert studio.planner is not None and studio.planner.source.endswith("lm-0.6B")
    assert "planner 0.6B: no GPU" in capsys.readouterr().err
