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
    from tiny_model import ensure_tiny_planner

    planner = Planner(str(ensure_tiny_planner(cache_dir)), backend="transformers", device="cpu", max_caption_tokens=8)
    planner.load()
    return planner


@pytest.fixture()
def thinking_studio(tiny_backend, tiny_planner, tmp_path):
    from outputs import OutputStore
    from studio import Studio

    return Studio(backend=tiny_backend, store=OutputStore(tmp_path / "outputs"), planner=tiny_planner)
