"""The GPU check's scaled-down CPU form runs every part end to end, so the script does not rot."""

from __future__ import annotations

import json

import pytest

from tools import gpu_check

pytestmark = pytest.mark.slow  # a benchmark smoke run; .ci/run runs it


def test_the_smoke_run_reports_every_figure(tmp_path, capsys, cache_dir):
    out = tmp_path / "gpu.json"
    gpu_check.main(["--smoke", "--json", str(out)])
    report = json.loads(out.read_text())
    assert [row["takes"] for row in report["planner"]] == list(gpu_check.SMOKE_TAKES)
    assert all(row["code_tokens_per_second_per_take"] > 0 for row in report["planner"])
    assert {(row["shape"], row["variant"]) for row in report["dit"]} == {
        (shape, variant) for shape in ("XL", "2B") for variant in ("turbo", "sft")
    }
    assert all(row["dit_step_s"] > 0 and row["vae_decode_s"] > 0 for row in report["dit"])
    assert [row["think"] for row in report["song"]] == [False, True]
    assert "gpu_check took" in capsys.readouterr().out


def test_the_xl_shape_is_the_published_one():
    assert (gpu_check.XL_DIT["hidden_size"], gpu_check.XL_DIT["num_hidden_layers"]) == (2560, 32)
    assert gpu_check.XL_DIT["num_attention_heads"] == 32
