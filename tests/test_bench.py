"""The benchmark runs end to end on the tiny model and reports every stage (no timing assertions)."""

from __future__ import annotations

import json

import pytest

from tools import bench, bench_levers

pytestmark = pytest.mark.slow  # benchmark smoke runs; .ci/run runs them


def test_bench_reports_every_stage(tmp_path, capsys, cache_dir):
    out = tmp_path / "bench.json"
    bench.main(["--model", "tiny", "--durations", "10", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [row["duration_s"] for row in rows] == [10]
    row = rows[0]
    for key in ("text_encoding_s", "dit_step_s", "vae_decode_s", "pipeline_s", "studio_s", "overhead_ratio"):
        assert row[key] > 0, key
    assert "real_time_factor" in capsys.readouterr().out


def test_levers_time_each_setting_against_the_default(tmp_path, capsys, cache_dir):
    out = tmp_path / "levers.json"
    bench_levers.main(["--model", "tiny", "--repeats", "1", "--vae-seconds", "25", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    levers = {row["lever"] for row in rows}
    assert {"attention", "guidance (SFT/base)", "dtype (DiT)", "VAE decode, 25 s song", "CPU offload"} <= levers
    for lever in levers - {"CPU offload"}:
        timed = [row for row in rows if row["lever"] == lever and row["seconds"] is not None]
        assert len(timed) >= 2 and sum(row["default"] for row in timed) == 1, lever
        assert all(row["seconds"] > 0 for row in timed)
    offload = next(row for row in rows if row["lever"] == "CPU offload")
    assert offload["seconds"] is None and "accelerator" in offload["note"]
    assert "vs default" in capsys.readouterr().out
