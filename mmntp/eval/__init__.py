"""Evaluation: forecast metrics (cheap to import), the time-series harness and plots.

``mmntp.eval.timeseries`` (the `mmntp eval timeseries` harness) and ``mmntp.eval.plot``
(matplotlib) are imported only by what uses them.
"""

from mmntp.eval.metrics import (
    geometric_mean,
    mase,
    seasonal_error,
    seasonal_naive,
    weighted_quantile_loss,
)

__all__ = [
    "geometric_mean",
    "mase",
    "seasonal_error",
    "seasonal_naive",
    "weighted_quantile_loss",
]
