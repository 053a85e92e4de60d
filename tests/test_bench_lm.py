"""bench_lm runs end to end on the tiny planner, the studio's loop beside a bare batched loop."""

from __future__ import annotations

import json

import pytest

from tools import bench_lm

pytestmark = pytest.mark.slow  # a benchmark smoke run; .ci/run runs it


def test_bench_lm_prints_the_studio_beside_the_bare_loop(tmp_path, capsys, cache_dir):
    out = tmp_path / "lm.json"
    bench_lm.main(["--seconds", "10", "--lyrics-tokens", "64", "--backends", "transformers", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    planner = next(row for row in rows if row["model"] == "planner")
    assert planner["codes"] == 50 and planner["tokens_per_second"] > 0
    assert planner["bare_tokens_per_second"] > 0 and planner["overhead"] > 0
    # The run's seconds hold its own forwards' (timed inside it), so the in-run ratio is at least 1.
    assert planner["overhead_in_run"] >= 1.0 and 0 < planner["forward_seconds"] <= planner["seconds"]
    assert "bare_tokens_per_second" in capsys.readouterr().out


def test_the_0_6b_shape_is_qwen3_0_6b():
    from transformers import Qwen3Config

    config = Qwen3Config(**bench_lm.PLANNER_SHAPES["0.6B"], vocab_size=bench_lm.PLANNER_1_7B_VOCAB)
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (1024, 28, 3072)
