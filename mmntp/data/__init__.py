"""Data for training and serving: bundled real series, synthetic series, text, and user I/O."""

from mmntp.data.series_io import (
    ForecastTable,
    check_context,
    read_forecast_csv,
    read_series,
    write_forecast_csv,
)
from mmntp.data.text import bundled_text_corpus, normalise_text, text_windows
from mmntp.data.timeseries import (
    FORECAST_HORIZONS,
    HOLDOUT_WINDOWS,
    Series,
    SeriesSampler,
    bundled_series,
    default_horizon,
    evaluation_origins,
    holdout_length,
    kernel_synth,
    train_part,
    ts_mixup,
)

__all__ = [
    "FORECAST_HORIZONS",
    "default_horizon",
    "HOLDOUT_WINDOWS",
    "ForecastTable",
    "Series",
    "SeriesSampler",
    "bundled_series",
    "bundled_text_corpus",
    "check_context",
    "evaluation_origins",
    "holdout_length",
    "kernel_synth",
    "normalise_text",
    "read_forecast_csv",
    "read_series",
    "text_windows",
    "train_part",
    "ts_mixup",
    "write_forecast_csv",
]
