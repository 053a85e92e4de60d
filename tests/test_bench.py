"""The benchmark runs end to end on the tiny model and reports every stage (no timing assertions)."""

from __future__ import annotations

import json

import bench


def test_bench_reports_every_stage(tmp_path, capsys, cache_dir):
    out = tmp_path / "bench.json"
    bench.main(["--model", "tiny", "--durations", "10", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [row["duration_s"] for row in rows] == [10]
    row = rows[0]
    for key in ("text_encoding_s", "dit_step_s", "vae_decode_s", "pipeline_s", "studio_s", "overhead_ratio"):
        assert row[key] > 0, key
    assert "real_time_factor" in capsys.readouterr().out
