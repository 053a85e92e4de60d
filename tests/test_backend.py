from __future__ import annotations

import sys

import pytest

from backend import Backend, DeviceInfo, ModelUnavailableError, RunControl, load_pipeline, pick_device
from checkpoints import resolve_model
from modes import GenerateRequest

CPU = DeviceInfo("cpu", "float32")


def test_cpu_machine_picks_cpu_with_fp32():
    assert pick_device() == CPU


def test_missing_hub_model_gives_a_clear_message():
    backend = Backend(resolve_model("xl-turbo"), device=CPU)
    with pytest.raises(ModelUnavailableError) as error:
        backend.load()
    message = str(error.value)
    assert "xl-turbo" in message
    assert "ACE-Step/acestep-v15-xl-turbo-diffusers" in message
    assert "--model DIR" in message and "--model tiny" in message
    assert backend.state == "load failed"
    assert "load failed" in backend.status()


def test_folder_without_a_model_gives_a_clear_message(tmp_path):
    folder = tmp_path / "my-checkpoint"
    folder.mkdir()
    with pytest.raises(ModelUnavailableError, match=r"model_index\.json"):
        Backend(resolve_model(str(folder)), device=CPU).load()


def test_offload_without_an_accelerator_runs_on_the_cpu(cache_dir):
    pipe = load_pipeline(resolve_model("tiny", cache_dir=cache_dir), CPU, offload=True)
    assert pipe.device.type == "cpu"
    assert pipe.vae.use_tiling


def test_injected_loader_sees_the_device_and_switches():
    seen = {}

    def loader(spec, device, offload, compile_dit):
        seen.update(spec=spec, device=device, offload=offload, compile_dit=compile_dit)
        raise ModelUnavailableError("fake loader: no hardware here")

    cuda = DeviceInfo("cuda", "bfloat16")
    backend = Backend(resolve_model("turbo"), device=cuda, offload=True, compile_dit=True, loader=loader)
    with pytest.raises(ModelUnavailableError):
        backend.load()
    assert seen["device"] == cuda and seen["offload"] and seen["compile_dit"]
    assert backend.status().startswith("load failed · CUDA · turbo")


def test_status_names_the_test_model(tiny_backend):
    assert tiny_backend.status() == "ready · CPU · tiny · test model: outputs noise"


def test_load_is_done_once(tiny_backend):
    assert tiny_backend.load() is tiny_backend.load()


def test_turbo_normalises_guidance(tiny_backend):
    request = GenerateRequest(prompt="x", guidance_scale=5.0)
    assert tiny_backend.normalise(request).guidance_scale == 1.0


def test_generate_returns_float32_takes(tiny_backend):
    request = GenerateRequest(prompt="x", audio_duration=10, seed=1, batch_size=2).validate()
    audio = tiny_backend.generate(request.pipeline_kwargs(), request.take_seeds(), RunControl())
    assert audio.shape == (2, 2, 480_000)
    assert audio.dtype.name == "float32"


def test_step_hooks_see_every_step_and_their_latents_are_the_ones_used(tiny_backend):
    request = GenerateRequest(prompt="x", audio_duration=10, seed=3, num_inference_steps=4).validate()
    plain = tiny_backend.generate(request.pipeline_kwargs(), request.take_seeds(), RunControl())
    seen = []

    def record(step, timestep, latents):
        seen.append((step, timestep, tuple(latents.shape)))
        return latents

    same = tiny_backend.generate(request.pipeline_kwargs(), request.take_seeds(), RunControl(), step_hooks=[record])
    assert [step for step, _, _ in seen] == [0, 1, 2, 3]
    assert [t for _, t, _ in seen] == sorted((t for _, t, _ in seen), reverse=True)  # t falls from 1 towards 0
    assert (same == plain).all()  # a hook that returns its latents changes nothing
    zeroed = tiny_backend.generate(
        request.pipeline_kwargs(), request.take_seeds(), RunControl(), step_hooks=[lambda s, t, x: x * 0]
    )
    assert not (zeroed == plain).all()  # what a hook returns is what the pipeline continues from


def test_importing_backend_does_not_import_torch():
    import subprocess

    code = "import backend, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[1]))


def test_only_cached_models_count_as_cached(tiny_backend):
    assert tiny_backend.is_cached()
    assert not Backend(resolve_model("xl-turbo"), device=CPU).is_cached()


def test_first_run_reports_the_model_loading(cache_dir):
    backend = Backend(resolve_model("tiny", cache_dir=cache_dir), device=CPU)
    messages = []
    request = GenerateRequest(prompt="x", audio_duration=10, seed=1).validate()
    backend.generate(request.pipeline_kwargs(), [1], RunControl(lambda f, m: messages.append((f, m))))
    assert messages[0] == (0.0, "Loading tiny on CPU…")
    assert backend.state == "ready" and backend.load_seconds > 0


def test_the_header_shows_the_share_of_components_loaded(cache_dir):
    backend = Backend(resolve_model("tiny", cache_dir=cache_dir), device=DeviceInfo("cpu", "float32"))
    seen: list[str] = []
    record = backend._loaded_part
    backend._loaded_part = lambda fraction: (record(fraction), seen.append(backend.status()))
    backend.load()
    percents = [int(line.split()[1].rstrip("%")) for line in seen]
    assert seen[0].startswith("loading 0%")
    assert percents == sorted(percents) and percents[-1] == 100 and len(set(percents)) >= 4
    assert backend.status().startswith("ready")


RACE = """
import sys, threading
from serving.cli import make_studio, parse_args
studio = make_studio(parse_args(["--model", "tiny"]))
errors = []
def run(load):
    try:
        load()
    except Exception as error:
        errors.append(repr(error))
loads = (studio.backend.load, studio.planner.load, studio.lyrics.load)
threads = [threading.Thread(target=run, args=(load,)) for load in loads]
[t.start() for t in threads]
[t.join() for t in threads]
print("errors:", errors)
"""


def test_the_three_models_load_at_once_in_a_fresh_process(tmp_path):
    # transformers resolves names lazily and is not thread-safe doing so: before import_libraries,
    # loading the DiT, planner and lyrics writer together failed 3 runs in 3 with
    # "cannot import name 'PreTrainedTokenizerFast' from 'transformers'".
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "ACE_STUDIO_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", RACE], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    assert "errors: []" in result.stdout, result.stdout + result.stderr[-2000:]


def test_lazy_builds_once_for_many_threads_and_retries_after_a_failure():
    import threading

    from backend import Lazy

    builds: list[int] = []
    release = threading.Event()

    def build() -> list[int]:
        release.wait(5)
        builds.append(1)
        if len(builds) == 1:
            raise OSError("disk full")
        return builds

    lazy = Lazy(build)
    assert (lazy.state, lazy.is_loaded) == ("not loaded", False)
    release.set()
    with pytest.raises(OSError, match="disk full"):
        lazy.get()
    assert (lazy.state, lazy.error, lazy.is_loaded) == ("load failed", "disk full", False)
    release.clear()
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(lazy.get())) for _ in range(4)]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(builds) == 2 and all(result is builds for result in results) and len(results) == 4
    assert (lazy.state, lazy.error) == ("ready", None) and lazy.seconds is not None
