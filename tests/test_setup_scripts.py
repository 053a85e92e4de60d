"""The two set-up scripts pass TORCH_SPEC to pip as separate words, so a spec can carry pip
options (an index URL for the CPU build). Each script runs for real against a stand-in
virtual environment whose ``python`` records the arguments it was called with."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CPU_SPEC = "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"


def _stand_in_venv(tmp_path: Path) -> tuple[Path, Path]:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "calls.log"
    for tool in ("python", "ruff"):
        script = venv / "bin" / tool
        # One line per call, one argument per tab-separated field.
        script.write_text(f'#!/bin/sh\n(IFS="\t"; echo "{tool}\t$*") >> "{log}"\n')
        script.chmod(0o755)
    return venv, log


def _calls(log: Path) -> list[list[str]]:
    return [line.split("\t") for line in log.read_text().splitlines()]


# The scripts read these; the caller's own (CI sets ACE_STUDIO_ALL=1) must not leak into the runs.
_SCRIPT_SETTINGS = ("ACE_STUDIO_ALL", "ACE_STUDIO_BENCH", "ACE_STUDIO_VENV", "ACE_STUDIO_TEST_VENV", "TORCH_SPEC")


def _run(script: str, env_overrides: dict[str, str], *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in _SCRIPT_SETTINGS} | env_overrides
    subprocess.run(["bash", str(ROOT / script), *args], env=env, check=True, timeout=60, cwd=ROOT)


def test_studio_sh_splits_torch_spec_into_words(tmp_path):
    venv, log = _stand_in_venv(tmp_path)
    _run("studio.sh", {"ACE_STUDIO_VENV": str(venv), "TORCH_SPEC": CPU_SPEC}, "--model", "tiny")
    calls = _calls(log)
    torch_install = [c for c in calls if "torch==2.13.0" in c]
    assert torch_install == [["python", "-m", "pip", "install", "--quiet", *CPU_SPEC.split()]]
    # torch goes in before the requirements, and the studio launches with the given options.
    assert calls.index(torch_install[0]) < calls.index(
        ["python", "-m", "pip", "install", "--quiet", "-r", "requirements.txt"]
    )
    assert calls[-1] == ["python", "app.py", "--model", "tiny"]


def test_studio_sh_without_torch_spec_lets_pip_choose(tmp_path):
    venv, log = _stand_in_venv(tmp_path)
    _run("studio.sh", {"ACE_STUDIO_VENV": str(venv)})
    assert not [c for c in _calls(log) if any(arg.startswith("torch") for arg in c)]


def test_test_sh_splits_torch_spec_and_reinstalls_when_it_changes(tmp_path):
    venv, log = _stand_in_venv(tmp_path)
    env = {"ACE_STUDIO_TEST_VENV": str(venv), "TORCH_SPEC": CPU_SPEC, "ACE_STUDIO_BENCH": "0"}
    _run("test.sh", env, "-k", "nothing")
    calls = _calls(log)
    assert ["python", "-m", "pip", "install", "--quiet", *CPU_SPEC.split()] in calls
    assert calls[-1] == ["python", "-m", "pytest", "-m", "not slow", "-k", "nothing"]
    assert ["python", "-m", "mypy"] in calls  # the type check runs before the tests
    # Same spec again: nothing reinstalled. Another spec: torch is installed again.
    log.unlink()
    _run("test.sh", env, "-k", "nothing")
    assert not [c for c in _calls(log) if "pip" in c]
    log.unlink()
    _run("test.sh", {**env, "TORCH_SPEC": "torch==2.13.0"}, "-k", "nothing")
    assert ["python", "-m", "pip", "install", "--quiet", "torch==2.13.0"] in _calls(log)


def test_test_sh_skips_slow_tests_unless_asked_for_all_or_given_a_marker(tmp_path):
    venv, log = _stand_in_venv(tmp_path)
    env = {"ACE_STUDIO_TEST_VENV": str(venv), "TORCH_SPEC": "torch==2.13.0", "ACE_STUDIO_BENCH": "0"}
    runs = [
        ({}, ["-x"], ["-m", "not slow", "-x"]),
        ({"ACE_STUDIO_ALL": "1"}, ["-x"], ["-x"]),
        ({}, ["-m", "slow"], ["-m", "slow"]),
        ({}, ["-mgpu", "-q"], ["-mgpu", "-q"]),
    ]
    for extra_env, args, pytest_args in runs:
        _run("test.sh", {**env, **extra_env}, *args)
        assert _calls(log)[-1] == ["python", "-m", "pytest", *pytest_args]


def test_ci_runs_every_test_and_the_benchmarks():
    text = (ROOT / ".ci" / "run").read_text()
    assert "ACE_STUDIO_BENCH=1 ACE_STUDIO_ALL=1 ./test.sh" in text
