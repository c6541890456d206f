"""Forecast plots: the history, the median and a quantile band, written to an image file.

Uses matplotlib's Agg backend (no display needed); matplotlib is imported only here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ForecastPanel", "plot_forecast", "plot_forecast_grid"]


def _band(quantiles: Mapping[float, np.ndarray], level: float, horizon: int) -> np.ndarray:
    """The quantile forecast nearest to ``level``, shaped (horizon,)."""
    if not quantiles:
        raise ValueError("no quantile forecasts to draw a band from")
    nearest = min(quantiles, key=lambda q: abs(float(q) - level))
    values = np.asarray(quantiles[nearest], dtype=np.float64)
    if values.shape != (horizon,):
        raise ValueError(f"quantile {nearest:g} has shape {values.shape}; expected ({horizon},)")
    return values


def plot_forecast(
    path: str | Path,
    history: np.ndarray | Sequence[float],
    median: np.ndarray | Sequence[float],
    quantiles: Mapping[float, np.ndarray],
    *,
    band: tuple[float, float] = (0.1, 0.9),
    max_history: int | None = None,
    title: str | None = None,
    times: Sequence | None = None,
) -> Path:
    """Draw history, median forecast and the ``band`` quantile range; save to ``path``.

    ``history`` is shaped (length,) (NaN = missing, drawn as a gap); ``median`` and each
    quantile array are shaped (horizon,). Only the last ``max_history`` points of the
    history are drawn (None: ``max(120, 6 * horizon)``, so the forecast stays readable). The file format follows the suffix (``.png``, ``.svg``,
    ``.pdf``). Returns the path written.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    history = np.asarray(history, dtype=np.float64).reshape(-1)
    median = np.asarray(median, dtype=np.float64).reshape(-1)
    if history.size == 0 or median.size == 0:
        raise ValueError("history and median must be non-empty")
    low, high = (_band(quantiles, level, median.size) for level in band)
    if max_history is None:
        max_history = max(120, 6 * median.size)
    if max_history < 1:
        raise ValueError(f"max_history must be >= 1, got {max_history}")
    fig, ax = plt.subplots(figsize=(9, 4.4), dpi=110)
    try:
        _draw_panel(ax, history, median, (low, high), band, max_history, times)
        ax.set_xlabel("time step" if times is None else "time")
        ax.set_ylabel("value")
        ax.set_title(title or f"{median.size}-step forecast")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False)
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def _draw_panel(ax, history, median, bounds, band, max_history, times=None, target=None) -> None:
    """History (its last ``max_history`` points), band, median and the optional target."""
    low, high = bounds
    shown = history[-max_history:]
    start = history.size - shown.size
    t_hist = np.arange(start, history.size)
    t_fut = np.arange(history.size, history.size + median.size)
    if times is not None:  # x values for history then forecast (e.g. datetimes)
        if len(times) != history.size + median.size:
            raise ValueError(f"{len(times)} times for {history.size + median.size} points")
        t_hist, t_fut = list(times[start : history.size]), list(times[history.size :])
    ax.plot(t_hist, shown, color="#1f4e79", lw=1.3, label="history")
    ax.fill_between(
        t_fut, low, high, color="#f28e2b", alpha=0.3, lw=0,
        label=f"{band[0]:.0%}–{band[1]:.0%} interval",
    )  # fmt: skip
    if target is not None:
        ax.plot(t_fut, target, color="0.2", lw=1.0, ls=":", label="actual")
    # Join the median to the last observed point so the forecast reads as a continuation.
    last = np.flatnonzero(np.isfinite(history))
    t_med, v_med = list(t_fut), median
    if last.size and last[-1] == history.size - 1:
        t_med = [t_hist[-1], *t_fut]
        v_med = np.concatenate([[history[-1]], median])
    ax.plot(t_med, v_med, color="#d1495b", lw=1.8, label="median forecast")
    ax.axvline(history.size - 0.5 if times is None else t_hist[-1], color="0.6", lw=0.8, ls="--")
    ax.grid(True, alpha=0.3)


@dataclass
class ForecastPanel:
    """One panel of :func:`plot_forecast_grid`; arrays as in :func:`plot_forecast`, plus
    the actual ``target`` (horizon,) drawn dotted."""

    title: str
    history: np.ndarray
    target: np.ndarray
    median: np.ndarray
    quantiles: Mapping[float, np.ndarray]


def plot_forecast_grid(
    path: str | Path,
    panels: Sequence[ForecastPanel],
    *,
    band: tuple[float, float] = (0.1, 0.9),
    columns: int = 4,
) -> Path:
    """Several forecasts against their actual values, one small panel each; save to ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    if not panels:
        raise ValueError("no forecasts to draw")
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.6 * rows), dpi=90)
    try:
        for ax, p in zip(np.ravel(axes), panels):
            median = np.asarray(p.median, dtype=np.float64)
            bounds = tuple(_band(p.quantiles, level, median.size) for level in band)
            history = np.asarray(p.history, dtype=np.float64)
            _draw_panel(ax, history, median, bounds, band, max(4 * median.size, 48), None, p.target)
            ax.set_title(p.title, fontsize=8)
            ax.tick_params(labelsize=6)
        for ax in np.ravel(axes)[len(panels) :]:
            ax.axis("off")
        handles, labels = np.ravel(axes)[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=4, frameon=False)
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        path = Path(path)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
