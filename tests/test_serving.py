"""Where the studio runs: the ZeroGPU duration estimate and retry, the Space's README
frontmatter, and the headless batch runner."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import batch
from checkpoints import REGISTRY, default_model_name
from modes import GenerateRequest
from outputs import SETTINGS_FILE, load_settings
from serving import zerogpu
from validation import MAX_DURATION_S, MIN_DURATION_S

ROOT = Path(__file__).resolve().parents[1]

durations = st.floats(MIN_DURATION_S, MAX_DURATION_S)
steps = st.integers(1, 100)


def request(duration: float, num_steps: int, batch_size: int = 1, guidance: float = 1.0) -> GenerateRequest:
    return GenerateRequest(
        prompt="x",
        audio_duration=duration,
        num_inference_steps=num_steps,
        batch_size=batch_size,
        guidance_scale=guidance,
    )


@settings(max_examples=200, deadline=None)
@given(durations, durations, steps, steps, st.booleans(), st.integers(0, 4))
def test_estimate_grows_with_duration_and_steps_and_stays_clamped(d1, d2, s1, s2, think, loras):
    (d1, d2), (s1, s2) = sorted((d1, d2)), sorted((s1, s2))
    low = zerogpu.estimate_gpu_seconds(request(d1, s1), think=think, lora_count=loras)
    high = zerogpu.estimate_gpu_seconds(request(d2, s2), think=think, lora_count=loras)
    assert zerogpu.MIN_GPU_S <= low <= high <= zerogpu.MAX_GPU_S


@settings(max_examples=100, deadline=None)
@given(durations, steps, st.integers(1, 4))
def test_thinking_guidance_batches_and_loras_never_cost_less(duration, num_steps, batch_size):
    base = zerogpu.estimate_gpu_seconds(request(duration, num_steps))
    assert zerogpu.estimate_gpu_seconds(request(duration, num_steps), think=True) >= base
    assert zerogpu.estimate_gpu_seconds(request(duration, num_steps, guidance=7.0)) >= base
    assert zerogpu.estimate_gpu_seconds(request(duration, num_steps, batch_size=batch_size)) >= base
    assert zerogpu.estimate_gpu_seconds(request(duration, num_steps), lora_count=2) >= base


def test_estimate_reads_arguments_by_name_as_spaces_passes_them():
    r = request(120, 8)
    assert zerogpu.estimate_gpu_seconds(request=r, think=True, lora_count=1, progress=None) == (
        zerogpu.estimate_gpu_seconds(r, True, 1)
    )
    # A 4-minute turbo song fits ZeroGPU's default 60 s; two 10-minute 50-step takes with guidance are capped.
    assert zerogpu.estimate_gpu_seconds(request(240, 8)) <= 60
    assert zerogpu.estimate_gpu_seconds(request(600, 50, 2, guidance=7.0)) == zerogpu.MAX_GPU_S


class AbortingStudio:
    """Stands in for ZeroGPU aborting a task: fails the first ``aborts`` calls the way spaces does."""

    def __init__(self, aborts: int) -> None:
        self.aborts = aborts
        self.calls = 0

    def generate(self, request, control):
        self.calls += 1
        if self.calls <= self.aborts:
            raise RuntimeError("GPU task aborted")
        return f"run for {request.prompt}"


def test_an_aborted_gpu_task_is_retried_once_then_explained():
    zerogpu.attach(AbortingStudio(aborts=1))
    assert zerogpu.run_on_zerogpu(request(60, 8)) == "run for x"
    studio = AbortingStudio(aborts=2)
    zerogpu.attach(studio)
    with pytest.raises(zerogpu.GpuAborted, match="stopped twice"):
        zerogpu.run_on_zerogpu(request(60, 8))
    assert studio.calls == 2
    zerogpu.attach(None)


def test_space_frontmatter_parses_and_fits():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md starts with the Space's YAML frontmatter"
    meta = yaml.safe_load(match.group(1))
    assert meta["sdk"] == "gradio"
    assert len(meta["short_description"]) <= 60
    assert (ROOT / meta["app_file"]).is_file()
    import gradio

    assert meta["sdk_version"] == gradio.__version__, "the Space runs the Gradio version the tests ran"
    assert REGISTRY[default_model_name()].repo_id in meta["preload_from_hub"]
    assert any("5Hz-lm" in repo for repo in meta["preload_from_hub"])


def test_batch_file_of_three_requests_writes_three_runs(studio, tmp_path):
    path = tmp_path / "requests.json"
    path.write_text(
        json.dumps(
            [
                {"prompt": "one", "audio_duration": 10, "seed": 1, "num_inference_steps": 2},
                {"mode": "generate", "prompt": "two", "audio_duration": 10, "seed": 2, "instrumental": True},
                {"prompt": "three", "audio_duration": 11, "seed": 3, "num_inference_steps": 2},
            ]
        )
    )
    runs = batch.run_batch(studio, batch.read_requests(path))
    folders = sorted(p for p in studio.store.root.iterdir() if p.is_dir())
    assert len(runs) == 3 and len(folders) == 3
    prompts = sorted(load_settings(folder / SETTINGS_FILE)["request"]["prompt"] for folder in folders)
    assert prompts == ["one", "three", "two"]


def test_batch_cli_reads_csv_and_writes_runs(cache_dir, tmp_path, capsys):
    path = tmp_path / "requests.csv"
    path.write_text("prompt,audio_duration,seed,num_inference_steps\nfirst,10,1,2\nsecond,10,2,2\nthird,10,3,2\n")
    outputs = tmp_path / "out"
    assert batch.main([str(path), "--model", "tiny", "--outputs", str(outputs), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out.split()
    assert len(printed) == 3 and all((Path(folder) / SETTINGS_FILE).is_file() for folder in printed)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]", "no requests"),
        ('[{"prompt": "ok"}, {"prompt": "x", "audio_duration": 5000}]', "request 2: audio_duration"),
        ('[{"mode": "remix", "prompt": "x"}]', "request 1: mode must be one of"),
        ('[{"prompt": "x", "tempo": 120}]', "request 1: "),
        ("{not json", "not valid JSON"),
    ],
)
def test_batch_refuses_bad_files_before_running_anything(tmp_path, content, message):
    path = tmp_path / "requests.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(message)):
        batch.read_requests(path)
