"""Shared fixtures: one tiny random-weight model per test session, built, saved and
loaded back through ``from_pretrained`` exactly as real checkpoints are."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# No test may reach the Hugging Face Hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cache")
    os.environ["ACE_STUDIO_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_backend(cache_dir):
    from backend import Backend, DeviceInfo
    from checkpoints import resolve_model

    backend = Backend(resolve_model("tiny", cache_dir=cache_dir), device=DeviceInfo("cpu", "float32"))
    backend.load()
    return backend


@pytest.fixture()
def studio(tiny_backend, tmp_path):
    from outputs import OutputStore
    from studio import Studio

    return Studio(backend=tiny_backend, store=OutputStore(tmp_path / "outputs"))


@pytest.fixture(scope="session")
def tiny_base_backend(cache_dir):
    """The base-variant tiny model: guidance runs and the base-only tasks are allowed."""
    from backend import Backend, DeviceInfo
    from checkpoints import resolve_model

    backend = Backend(resolve_model("tiny-base", cache_dir=cache_dir), device=DeviceInfo("cpu", "float32"))
    backend.load()
    return backend


@pytest.fixture(scope="session")
def tiny_planner(cache_dir):
    """The tiny random-weight 5 Hz LM (built like the tiny DiT), on transformers."""
    from lm.planner import Planner
    from tools.tiny_model import ensure_tiny_planner

    planner = Planner(str(ensure_tiny_planner(cache_dir)), backend="transformers", device="cpu", max_caption_tokens=8)
    planner.load()
    return planner


@pytest.fixture()
def thinking_studio(tiny_backend, tiny_planner, tmp_path):
    from outputs import OutputStore
    from studio import Studio

    return Studio(backend=tiny_backend, store=OutputStore(tmp_path / "outputs"), planner=tiny_planner)


@pytest.fixture()
def on_a_full_disk(cache_dir, tmp_path):
    """Run ``body`` (Python source) in a child process with a tiny-model ``studio`` over
    ``tmp_path / "outputs"``, after its setup, with the file-size limit at 64 kB: every write
    past that fails with EFBIG, as on a full disk. Returns the child's stdout."""
    import subprocess
    import textwrap

    outputs = str(tmp_path / "outputs")

    def run(setup: str, body: str) -> str:
        script = "\n".join(
            [
                "import os, resource, signal, sys",
                f"sys.path.insert(0, {str(ROOT)!r})",
                f"os.environ['ACE_STUDIO_CACHE'] = {str(cache_dir)!r}",
                "import gradio as gr",
                "from backend import Backend, DeviceInfo, RunControl",
                "from checkpoints import resolve_model",
                "from outputs import OutputStore",
                "from studio import Studio",
                "backend = Backend(resolve_model('tiny'), device=DeviceInfo('cpu', 'float32'))",
                "backend.load()",
                f"studio = Studio(backend=backend, store=OutputStore({outputs!r}))",
                textwrap.dedent(setup),
                "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)",
                "resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, resource.RLIM_INFINITY))",
                textwrap.dedent(body),
            ]
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    return run
