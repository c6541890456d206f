"""`mmntp bench engine --quick` runs end to end and writes the promised JSON shape.

Benchmarks are not tests: nothing here looks at a time, only at the shape of the output.
"""

import argparse
import json
import math

import pytest

pytest.importorskip("transformers")

from mmntp.bench import add_bench_parser  # noqa: E402
from mmntp.bench.common import Row, percentile  # noqa: E402
from mmntp.bench.engine import main  # noqa: E402

SCENARIOS = {
    "decode_tiny",
    "decode_0.2m",  # --quick's second model: the label names the model measured
    "load_throughput",
    "load_ttft_p50",
    "load_ttft_p99",
    "load_itl_p50",
    "load_itl_p99",
    "saturated_throughput",
    "idle_ttft",
    "prefix_ttft",
}
ROW_KEYS = {"scenario", "mmntp", "baseline", "ratio", "unit"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    import contextlib
    import io

    out = tmp_path_factory.mktemp("bench") / "nested" / "engine.json"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["--quick", "--json", "--out", str(out)])
    return code, stdout.getvalue(), out


def test_quick_json_lines_have_the_row_shape(quick_run):
    code, stdout, _ = quick_run
    assert code == 0
    lines = [line for line in stdout.splitlines() if not line.startswith("WARNING")]
    rows = [json.loads(line) for line in lines]
    assert {r["scenario"] for r in rows} == SCENARIOS
    for r in rows:
        assert set(r) >= ROW_KEYS, r
        assert isinstance(r["unit"], str)
        for key in ("mmntp", "baseline", "ratio"):
            assert isinstance(r[key], float) and r[key] > 0, (r["scenario"], key)
    by_name = {r["scenario"]: r for r in rows}
    assert isinstance(by_name["decode_tiny"]["tokens_agree"], bool)
    assert round(by_name["decode_0.2m"]["params_m"], 1) == 0.2
    assert "target" in by_name["decode_tiny"] and "target" not in by_name["decode_0.2m"]
    assert isinstance(by_name["load_ttft_p99"]["p99_over_idle"], float)
    assert by_name["load_ttft_p99"]["slowdown_p99"] >= by_name["load_ttft_p99"]["slowdown_p50"]
    floor = by_name["decode_tiny"]["weight_floor_ms_per_token"]
    assert 0 < floor < by_name["decode_tiny"]["baseline_ms_per_token"]
    assert by_name["load_throughput"]["mmntp_preemptions"] == 0
    assert by_name["prefix_ttft"]["baseline_is"] == "mmntp, prefix caching off"


def test_quick_results_file_holds_rows_and_machine(quick_run):
    _, stdout, out = quick_run
    payload = json.loads(out.read_text())
    assert payload["benchmark"] == "engine" and payload["quick"] is True
    assert {"date", "nproc", "cpu", "torch", "torch_threads"} <= set(payload["machine"])
    assert [r["scenario"] for r in payload["rows"]] == [
        json.loads(line)["scenario"] for line in stdout.splitlines() if line.startswith("{")
    ]


def test_table_output_and_scenario_pick(tmp_path, capsys):
    out = tmp_path / "engine.json"
    assert main(["--quick", "--scenarios", "3", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "prefix_ttft" in table and "decode_tiny" not in table
    assert [r["scenario"] for r in json.loads(out.read_text())["rows"]] == ["prefix_ttft"]


@pytest.mark.parametrize("bad", ["4", "1,x", ""])
def test_bad_scenarios_are_refused(bad, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--quick", "--scenarios", bad, "--out", str(tmp_path / "x.json")])
    assert exc.value.code == 2
    assert "--scenarios" in capsys.readouterr().err


def test_add_bench_parser_wires_the_engine_subcommand():
    parser = argparse.ArgumentParser(prog="mmntp")
    add_bench_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "engine", "--json", "--scenarios", "2,1"])
    assert args.json and not args.quick and args.scenarios == (1, 2)
    assert args.out == "bench-results/engine.json" and callable(args.func)
    bare = parser.parse_args(["bench"])
    assert bare.func(bare) == 2  # prints the bench help, exit code 2


def test_ratio_direction_and_percentile():
    assert Row("x", 200.0, 100.0, "tok/s").ratio == 2.0
    assert Row("x", 10.0, 30.0, "ms", higher_is_better=False).ratio == 3.0
    assert Row("x", 1.0, 0.0, "ms").to_dict()["ratio"] is None  # nan -> null in JSON
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match="q must be"):
        percentile([1.0], 101)


def test_full_settings_keep_their_labels():
    from mmntp.bench.engine_pair import Settings

    assert list(Settings().models) == ["tiny", "50m"] and Settings().reference == "tiny"
    assert list(Settings.quick().models) == ["tiny", "0.2m"]


def test_max_ttft_lower_bound_is_the_worst_burst_of_prefill_work():
    from mmntp.bench.engine_load import max_ttft_lower_bound

    # three prompts arriving within 8 ms: the last one served waits for all their work
    burst = max_ttft_lower_bound([0.0, 0.005, 0.008], [0.018, 0.023, 0.025])
    assert math.isclose(burst, 0.066 - 0.008)
    # spread out, nobody waits: the floor is the longest prefill alone
    assert math.isclose(max_ttft_lower_bound([0.0, 1.0, 2.0], [0.01, 0.03, 0.02]), 0.03)
