"""Forecast accuracy metrics as Chronos and GluonTS define them, with NaN meaning missing.

* :func:`mase`: mean absolute error of a point forecast divided by the in-sample MAE of the
  seasonal-naive forecast on the context (GluonTS ``MASE``, ``calculate_seasonal_error``).
* :func:`weighted_quantile_loss`: the pinball loss summed over steps and quantile levels,
  ``2 * sum / (num_levels * sum |y|)`` (GluonTS ``MeanWeightedSumQuantileLoss``, the WQL of
  the Chronos paper). Pool several windows by concatenating them along the last axis.
* :func:`seasonal_naive`: repeat the last season of the context (the baseline that relative
  scores divide by; its quantiles are its point value).
* :func:`geometric_mean`: how relative scores are aggregated across datasets.

Missing targets (NaN) are ignored in both numerator and denominator, as GluonTS masks them.
Every bad input raises ``ValueError`` saying which argument and why.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "geometric_mean",
    "mase",
    "seasonal_error",
    "seasonal_naive",
    "weighted_quantile_loss",
]


def _as_1d(name: str, values: np.ndarray | Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if np.isinf(arr).any():
        raise ValueError(f"{name} contains infinite values")
    return arr


def _check_forecast(name: str, forecast: np.ndarray, shape: tuple[int, ...]) -> None:
    if forecast.shape != shape:
        raise ValueError(f"{name} has shape {forecast.shape}; expected {shape}")
    if not np.isfinite(forecast).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def _lag_mae(context: np.ndarray, lag: int) -> float:
    """Mean |y_t - y_{t-lag}| over pairs where both are observed; NaN when there is none."""
    if lag >= context.shape[0]:
        return float("nan")
    diffs = np.abs(context[lag:] - context[:-lag])
    diffs = diffs[np.isfinite(diffs)]
    return float(diffs.mean()) if diffs.size else float("nan")


def seasonal_error(context: np.ndarray | Sequence[float], season_length: int = 1) -> float:
    """The MASE scale: in-sample MAE of the seasonal-naive forecast over the context.

    ``mean_{t >= m} |y_t - y_{t-m}|`` over the pairs where both values are observed. As in
    GluonTS, ``m`` falls back to 1 when the context is not longer than one season; it also
    falls back to 1 when the seasonal scale is 0 or has no observed pair. Raises
    ``ValueError`` when even the lag-1 scale is 0 or undefined (a constant context).
    """
    context = _as_1d("context", context)
    if season_length < 1:
        raise ValueError(f"season_length must be >= 1, got {season_length}")
    scale = _lag_mae(context, season_length)
    if not scale > 0.0 and season_length > 1:
        scale = _lag_mae(context, 1)
    if not scale > 0.0:
        raise ValueError(
            "MASE is undefined: the context's naive scale is "
            f"{'0 (constant context)' if scale == 0.0 else 'undefined (too few observed values)'}"
        )
    return scale


def mase(
    target: np.ndarray | Sequence[float],
    forecast: np.ndarray | Sequence[float],
    context: np.ndarray | Sequence[float],
    season_length: int = 1,
) -> float:
    """Mean absolute scaled error of a point forecast for one window.

    ``mean |y - yhat| / seasonal_error(context, m)`` over the observed (non-NaN) targets.
    ``target`` and ``forecast`` are shaped (horizon,); ``forecast`` must be finite.
    """
    target = _as_1d("target", target)
    forecast = np.asarray(forecast, dtype=np.float64)
    _check_forecast("forecast", forecast, target.shape)
    observed = np.isfinite(target)
    if not observed.any():
        raise ValueError("target has no observed values")
    scale = seasonal_error(context, season_length)
    return float(np.abs(target[observed] - forecast[observed]).mean() / scale)


def weighted_quantile_loss(
    target: np.ndarray | Sequence[float],
    quantile_forecasts: np.ndarray | Sequence[Sequence[float]],
    levels: Sequence[float],
) -> float:
    """Weighted quantile loss: ``2 * sum_{q,t} pinball_q(y_t, yhat_{q,t}) / (Q * sum_t |y_t|)``.

    ``target`` is shaped (n,) (concatenate windows to pool them, as Chronos does per
    dataset); ``quantile_forecasts`` is shaped (len(levels), n), row i the forecast of level
    ``levels[i]``. The pinball loss is ``(y - yhat) * (q - [y < yhat])``. Steps whose
    target is NaN are left out of both sums.
    """
    target = _as_1d("target", target)
    levels_arr = np.asarray(levels, dtype=np.float64)
    if levels_arr.ndim != 1 or levels_arr.size == 0:
        raise ValueError(f"levels must be a non-empty 1-D sequence, got {levels!r}")
    if not ((levels_arr > 0.0) & (levels_arr < 1.0)).all():
        raise ValueError(f"levels must lie strictly between 0 and 1, got {list(levels)}")
    preds = np.asarray(quantile_forecasts, dtype=np.float64)
    _check_forecast("quantile_forecasts", preds, (levels_arr.size, target.size))
    observed = np.isfinite(target)
    if not observed.any():
        raise ValueError("target has no observed values")
    y, preds = target[observed], preds[:, observed]  # y: [n_obs], preds: [Q, n_obs]
    denom = float(np.abs(y).sum())
    if denom == 0.0:
        raise ValueError("WQL is undefined: the observed targets are all 0")
    error = y[None, :] - preds
    loss = error * (levels_arr[:, None] - (error < 0.0))  # pinball: [Q, n_obs]
    return float(2.0 * loss.sum() / (levels_arr.size * denom))


def seasonal_naive(
    context: np.ndarray | Sequence[float], horizon: int, season_length: int = 1
) -> np.ndarray:
    """The seasonal-naive forecast, shaped (horizon,): the last season repeated.

    As GluonTS' ``SeasonalNaivePredictor`` with last-value imputation: missing values are
    filled with the previous observed value (leading ones with the first observed value)
    before the last ``season_length`` values are repeated; a context shorter than one
    season repeats its last value.
    """
    context = _as_1d("context", context)
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if season_length < 1:
        raise ValueError(f"season_length must be >= 1, got {season_length}")
    observed = np.flatnonzero(np.isfinite(context))
    if observed.size == 0:
        raise ValueError("context has no observed values")
    # Index of the latest observed value at or before each position (forward fill).
    last = np.maximum.accumulate(np.where(np.isfinite(context), np.arange(context.size), -1))
    filled = context[np.where(last >= 0, last, observed[0])]
    m = season_length if context.size >= season_length else 1
    season = filled[-m:]
    return season[np.arange(horizon) % m].copy()


def geometric_mean(values: np.ndarray | Sequence[float]) -> float:
    """Geometric mean of positive finite scores (how Chronos aggregates relative scores)."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError("geometric mean of no values")
    if not np.isfinite(arr).all() or (arr <= 0.0).any():
        raise ValueError(f"geometric mean needs positive finite values, got {arr.tolist()}")
    return float(np.exp(np.log(arr).mean()))
