"""`mmntp bench batch` runs end to end on the tiny model and writes the promised rows.

Benchmarks are not tests: nothing here looks at a time, only at the output's shape.
"""

import json

from mmntp.cli import main


def test_bench_batch_writes_one_row_per_path(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "batch.json"
    argv = ["bench", "batch", "--model", str(tiny_model_dir), "--modalities", "timeseries"]
    argv += ["--no-interactive"]  # the server-batch rows: tests/test_bench_batch_interactive.py
    assert main([*argv, "--forecasts", "3", "--json", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["scenario"] for r in rows] == ["batch_local_timeseries", "batch_server_timeseries"]
    for row in rows:
        assert row["unit"] == "req/s" and row["requests"] == 3
        assert row["mmntp"] > 0 and row["baseline"] > 0 and row["ratio"] > 0
    saved = json.loads(out.read_text())
    assert saved["benchmark"] == "batch" and len(saved["rows"]) == 2
