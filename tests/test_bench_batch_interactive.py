"""The interactive rows of `mmntp bench batch` on tiny settings: shape, not speed."""

import math

import pytest
from serving import DEFAULT_SERVICE

from mmntp.bench.batch_interactive import InteractiveSettings, batch_lines, interactive_rows
from mmntp.generation import Pipeline


def test_interactive_rows_measure_both_patterns_and_report_the_ratio():
    pipe = Pipeline.from_pretrained(DEFAULT_SERVICE)
    settings = InteractiveSettings(probes=2, rounds=1, batch_lines=40, max_tokens=2)
    rows = [r.to_dict() for r in interactive_rows(pipe, settings)]
    assert [r["scenario"] for r in rows] == [
        f"interactive ttft p{q}, {pattern}: batch running vs idle"
        for pattern in ("back-to-back", "sparse")
        for q in (50, 99)
    ]
    for row in rows:
        assert row["unit"] == "ms" and row["mmntp"] > 0 and row["baseline"] > 0
        assert math.isclose(row["busy_over_idle"], row["mmntp"] / row["baseline"], rel_tol=0.01)
    assert rows[3]["target_busy_over_idle"] == 1.5 and rows[3]["gap_s"] > 0.2
    assert not pipe.engine.has_unfinished()  # every batch was cancelled


def test_batch_lines_are_distinct_seeded_forecasts():
    lines = batch_lines(InteractiveSettings(batch_lines=3))
    assert len(set(lines)) == 3 and all('"seed"' in x for x in lines)
    with pytest.raises(ValueError):
        InteractiveSettings(probes=0)
