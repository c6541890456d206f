"""The bundled default service: a trained model that forecasts real series sensibly."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmntp.api import SamplingParams
from mmntp.data import bundled_series, default_horizon, evaluation_origins
from mmntp.generation import Pipeline, TimeSeriesOutput, TimeSeriesPart

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.from_pretrained(ROOT / "services" / "default")


def test_cli_forecast_on_a_bundled_real_series(tmp_path):
    out = tmp_path / "forecast.csv"
    cmd = [
        sys.executable,
        "-m",
        "mmntp.cli",
        "generate",
        "--modality",
        "timeseries",
        "--context",
        str(ROOT / "examples" / "elec_equip.csv"),
        "--horizon",
        "12",
        "--num-samples",
        "20",
        "--seed",
        "0",
        "-o",
        str(out),
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["timestamp", "median"] + [f"q0.{i}" for i in range(1, 10)]
    assert [r[0] for r in rows[1:3]] == ["2016-06", "2016-07"]  # the input's months go on
    values = np.array([r[1:] for r in rows[1:]], dtype=float)
    assert values.shape == (12, 10) and np.isfinite(values).all()
    assert np.all(np.diff(values[:, 1:], axis=1) >= 0)  # quantiles monotone in each row
    history = np.loadtxt(ROOT / "examples" / "elec_equip.csv", delimiter=",", skiprows=1, usecols=1)
    # A trained forecaster stays in the series' range (an untrained one wanders over ±15·scale).
    assert history.min() * 0.5 < np.median(values[:, 0]) < history.max() * 1.5


def test_trained_model_beats_an_untrained_guess_on_held_out_windows(pipe):
    """Median forecasts on held-out windows are closer than the context mean's spread."""
    errors = []
    for s in bundled_series():
        horizon = default_horizon(s)
        origin = evaluation_origins(s, horizon)[0]
        context, target = s.values[:origin], s.values[origin : origin + horizon]
        out = pipe(
            TimeSeriesPart(context),
            TimeSeriesOutput(horizon=horizon, num_samples=10),
            SamplingParams(temperature=1.0, top_k=50, seed=0),
        )
        scale = np.nanmean(np.abs(context))
        errors.append(np.nanmean(np.abs(out.forecast.median - target)) / scale)
    # Relative to the series' scale, errors stay well below what a random bin would give
    # (the bins span ±15·scale): a loose sanity bound, the real benchmark is `mmntp eval`.
    assert float(np.median(errors)) < 0.5


def test_cli_generates_a_tone_clip_with_the_bundled_model(tmp_path):
    import soundfile as sf

    out = tmp_path / "tone.wav"
    cmd = [sys.executable, "-m", "mmntp.cli", "generate", "--modality", "audio"]
    cmd += ["--prompt", "a sine tone at 440 Hz", "--seconds", "0.5", "--seed", "0", "-o", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    samples, rate = sf.read(out)
    assert rate == 16000 and len(samples) == 8000  # 0.5 s of 200 cochlear tokens/s
    assert 0.01 < np.abs(samples).max() <= 1.0  # audible, not clipped past full scale
