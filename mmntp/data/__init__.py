"""Data for training and serving: bundled real series, synthetic series, text, and user I/O."""

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
    "Series",
    "SeriesSampler",
    "bundled_series",
    "bundled_text_corpus",
    "evaluation_origins",
    "holdout_length",
    "kernel_synth",
    "normalise_text",
    "text_windows",
    "train_part",
    "ts_mixup",
]
