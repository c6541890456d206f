"""`mmntp eval timeseries` on a couple of small datasets, and `generate --plot`."""

import contextlib
import io
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest

from mmntp.cli import main
from mmntp.eval import timeseries as ev

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One small run through the CLI: (stdout JSON, --out JSON)."""
    out = tmp_path_factory.mktemp("eval") / "eval.json"
    argv = ["eval", "timeseries", "--datasets", "nile,danish_data/lrm", "--num-samples", "4"]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main([*argv, "--seed", "1", "--json", "--out", str(out)])
    assert code == 0, stderr.getvalue()
    assert "[eval] mmntp: 6/6 windows forecast" in stderr.getvalue()  # progress on stderr
    return json.loads(stdout.getvalue()), json.loads(out.read_text())


def test_eval_reports_well_formed_relative_scores(report):
    printed, _ = report
    assert [d["name"] for d in printed["datasets"]] == ["nile", "danish_data/lrm"]
    for d in printed["datasets"]:
        assert d["windows"] == 3
        assert d["relative"]["seasonal_naive"] == {"mase": 1.0, "wql": 1.0}
        for model in ("mmntp", "ets", "seasonal_naive"):
            for value in (*d["scores"][model].values(), *d["relative"][model].values()):
                assert math.isfinite(value) and value > 0
        assert sum(d["ets_models"].values()) == 3
    agg = printed["geometric_mean_relative"]
    assert agg["seasonal_naive"] == {"mase": 1.0, "wql": 1.0}
    for model in ("mmntp", "ets"):
        rel = [d["relative"][model]["mase"] for d in printed["datasets"]]
        assert agg[model]["mase"] == pytest.approx(math.sqrt(rel[0] * rel[1]))


def test_eval_out_file_has_settings_and_date(report):
    printed, saved = report
    assert saved["datasets"] == printed["datasets"]
    assert saved["settings"]["num_samples"] == 4 and saved["settings"]["seed"] == 1
    assert saved["settings"]["datasets"] == ["nile", "danish_data/lrm"]
    assert saved["date"][:2] == "20" and "T" in saved["date"]
    assert saved["machine"]["nproc"] >= 1


def test_eval_table_lists_every_dataset_and_the_geometric_mean(report):
    text = ev.format_table(report[0])
    assert "nile" in text and "danish_data/lrm" in text and "geometric mean" in text


def test_eval_unknown_dataset_is_an_error(capsys):
    assert main(["eval", "timeseries", "--datasets", "nile,nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'nope'" in err and "macrodata" in err


def test_dataset_selection_groups_series_by_statsmodels_dataset():
    picked = ev.select_series(["macrodata", "nile"])
    assert [label for label, _ in picked] == ["nile"] + ["macrodata"] * 4
    assert [s.name for _, s in ev.select_series(["macrodata/cpi"])] == ["macrodata/cpi"]


def test_ets_falls_back_to_simple_smoothing_and_says_so(monkeypatch):
    label, series = ev.select_series(["elec_equip"])[0]
    window = ev.build_windows([(label, series)], 1)[0]
    fit = ev._fit_ets

    def trendless_only(x, horizon, trend, season):
        if trend or season > 1:
            raise np.linalg.LinAlgError("singular")
        return fit(x, horizon, trend, season)

    monkeypatch.setattr(ev, "_fit_ets", trendless_only)
    forecast, spec, note = ev.forecast_ets(window, ev.DEFAULT_QUANTILES)
    assert spec == "ANN" and "AAdA fit failed" in note and "used ANN" in note
    assert forecast.quantiles.shape == (9, window.horizon)
    assert np.all(np.diff(forecast.quantiles, axis=0) > 0)  # levels ascend


def test_generate_plot_writes_a_png(tmp_path, capsys):
    png, csv = tmp_path / "forecast.png", tmp_path / "forecast.csv"
    args = ["generate", "--modality", "timeseries", "--context", str(ROOT / "examples/nile.csv")]
    args += ["--horizon", "6", "--num-samples", "4", "--seed", "0"]
    assert main([*args, "--plot", str(png), "-o", str(csv)]) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert 600 <= width <= 2000 and 300 <= height <= 1200
    assert 10_000 < len(data) < 2_000_000
    assert len(csv.read_text().splitlines()) == 1 + 6  # -o still writes the CSV
    assert "wrote forecast plot" in capsys.readouterr().err
