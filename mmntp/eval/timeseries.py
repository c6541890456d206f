"""`mmntp eval timeseries`: rolling-origin evaluation, in-domain and zero-shot, in two tables.

* **in-domain**: each bundled statsmodels series keeps its final ``HOLDOUT_WINDOWS``
  windows of its frequency's horizon out of training
  (:func:`mmntp.data.evaluation_origins`), but training saw the rest of the series;
* **zero-shot**: the evaluation side of :mod:`mmntp.data.series_catalog`'s split by
  series, which no training recipe reads, up to ``HOLDOUT_WINDOWS`` rolling windows at the
  end of each series; a dataset is a data set (``fpp2/melsyd`` holds two series).

Each window is forecast from everything before its origin by

* ``mmntp``: the pipeline (``TimeSeriesOutput(horizon, num_samples)``, Chronos' sampling
  defaults with a per-window seed derived from ``--seed``); the windows' requests are put
  on the pipeline's engine together, so its batches mix windows and the prefix cache
  computes each context once for all its sample paths;
* ``ets``: statsmodels' ``ETSModel`` with additive error, additive damped trend and, where
  the frequency has a season and the context at least three of them, additive seasonality
  (AAdA, else AAdN), quantiles from its exact Gaussian prediction intervals; where that fit
  fails, simple exponential smoothing (ANN), and the report says so;
* ``seasonal_naive``: the last season repeated (the baseline).

As in Chronos, a dataset (a statsmodels dataset: ``macrodata`` holds four series) gets MASE
of the median averaged over its windows and WQL over levels 0.1..0.9 pooled over its
windows; each model's scores are divided by seasonal naive's, and the relative scores are
aggregated across datasets by geometric mean, per frequency and overall.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
import time
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import Any

import numpy as np

from mmntp.api import DEFAULT_NUM_SAMPLES, DEFAULT_QUANTILES, TimeSeriesOutput, TimeSeriesPart
from mmntp.api.sampling import defaults as sampling_defaults
from mmntp.data.series_catalog import (
    data_source,
    default_split,
    rolling_origins,
    zero_shot_series,
)
from mmntp.data.timeseries import (
    HOLDOUT_WINDOWS,
    Series,
    bundled_series,
    default_horizon,
    evaluation_origins,
)
from mmntp.eval.metrics import (
    geometric_mean,
    mase,
    seasonal_error,
    seasonal_naive,
    weighted_quantile_loss,
)

MODELS = ("mmntp", "ets", "seasonal_naive")
TABLES = ("in_domain", "zero_shot")
FREQ_ORDER = ("Y", "Q", "M", "W", "D", "H")
BASELINE = "seasonal_naive"
Progress = Callable[[str], None]


def stderr_progress(message: str) -> None:
    """One progress line on stderr (stdout stays machine-readable under --json)."""
    print(f"[eval] {message}", file=sys.stderr, flush=True)


def _quiet(message: str) -> None:
    pass


@dataclass(frozen=True)
class Window:
    """One evaluation window: forecast ``target`` from ``context`` (everything before it)."""

    dataset: str
    series: Series
    origin: int
    horizon: int

    @property
    def context(self) -> np.ndarray:
        return self.series.values[: self.origin]

    @property
    def target(self) -> np.ndarray:
        return self.series.values[self.origin : self.origin + self.horizon]


@dataclass
class QuantileForecast:
    """A forecast for one window: ``median`` (horizon,), ``quantiles`` (num_levels, horizon)."""

    median: np.ndarray
    quantiles: np.ndarray


@dataclass
class EvalSettings:
    """What to evaluate and how; ``datasets`` None means every bundled dataset."""

    num_samples: int = DEFAULT_NUM_SAMPLES
    seed: int = 0
    datasets: tuple[str, ...] | None = None
    windows: int = HOLDOUT_WINDOWS
    levels: tuple[float, ...] = DEFAULT_QUANTILES
    tables: tuple[str, ...] = TABLES
    head: str | None = None  # "tokens" or "patch" (TimeSeriesOutput.head); None: the model's
    latency_runs: int = 5  # timed 24-step, 20-path forecasts (0: none)

    def __post_init__(self) -> None:
        unknown = [t for t in self.tables if t not in TABLES]
        if unknown or not self.tables:
            raise ValueError(f"tables must be some of {list(TABLES)}, got {list(self.tables)}")
        if self.latency_runs < 0:
            raise ValueError(f"latency_runs must be >= 0, got {self.latency_runs}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            "seed": self.seed,
            "datasets": list(self.datasets) if self.datasets else None,
            "windows_per_series": self.windows,
            "tables": list(self.tables),
            "head": self.head,
            "quantile_levels": list(self.levels),
            "sampling": {
                "temperature": sampling_defaults("timeseries").temperature,
                "top_k": sampling_defaults("timeseries").top_k,
            },
        }


# -- selection ------------------------------------------------------------------------


def dataset_of(series: Series) -> str:
    """The statsmodels dataset a bundled series comes from (``macrodata/cpi`` -> ``macrodata``)."""
    return series.name.split("/", 1)[0]


def _pick(
    pool: Sequence[Series], label_of: Callable[[Series], str], names: Sequence[str] | None
) -> list[tuple[str, Series]]:
    """(dataset label, series) pairs of ``pool`` for dataset or series ``names`` (None: all).

    A name is a dataset (all its series, one dataset) or one series (a dataset of its
    own); names that match nothing here are ignored (the caller checks unknown names).
    """
    if not names:
        return [(label_of(s), s) for s in pool]
    picked: dict[str, tuple[str, Series]] = {}
    for name in names:
        for s in pool:
            if s.name == name or label_of(s) == name:
                picked.setdefault(s.name, (name, s))
    return [picked[s.name] for s in pool if s.name in picked]


def _check_names(names: Sequence[str], pools: Sequence[tuple[Sequence[Series], Callable]]) -> None:
    known = {n for pool, label_of in pools for s in pool for n in (s.name, label_of(s))}
    unknown = [n for n in names if n not in known]
    if unknown:
        choices = ", ".join(sorted(known))
        raise ValueError(f"unknown dataset {', '.join(map(repr, unknown))}; choose from {choices}")


def select_series(names: Sequence[str] | None = None) -> list[tuple[str, Series]]:
    """In-domain (dataset label, series) pairs in bundled order for dataset or series ``names``.

    A name is a statsmodels dataset (``macrodata``: all its series, one dataset) or one
    series (``macrodata/cpi``: a dataset of its own). None selects every dataset. Raises
    ``ValueError`` naming an unknown name and listing the known ones.
    """
    if names:
        _check_names(names, [(bundled_series(), dataset_of)])
    return _pick(bundled_series(), dataset_of, names)


def select_zero_shot(names: Sequence[str] | None = None) -> list[tuple[str, Series]]:
    """Zero-shot (dataset label, series) pairs; a dataset is a :func:`data_source`."""
    return _pick(zero_shot_series(), lambda s: data_source(s.name), names)


def check_dataset_names(names: Sequence[str], tables: Sequence[str] = TABLES) -> None:
    """Raise ``ValueError`` for a name that no selected table knows, listing the known ones."""
    pools = []
    if "in_domain" in tables:
        pools.append((bundled_series(), dataset_of))
    if "zero_shot" in tables:
        pools.append((zero_shot_series(), lambda s: data_source(s.name)))
    _check_names(names, pools)


def table_windows(settings: EvalSettings) -> dict[str, list[Window]]:
    """Each selected table's windows; a table none of ``settings.datasets`` names is left out."""
    names = settings.datasets
    if names:
        check_dataset_names(names, settings.tables)
    out = {}
    if "in_domain" in settings.tables:
        windows = build_windows(_pick(bundled_series(), dataset_of, names), settings.windows)
        if windows:
            out["in_domain"] = windows
    if "zero_shot" in settings.tables:
        windows = build_zero_shot_windows(select_zero_shot(names), settings.windows)
        if windows:
            out["zero_shot"] = windows
    return out


def build_windows(selected: Sequence[tuple[str, Series]], windows: int) -> list[Window]:
    """Every held-out window of the selected series, at their frequency's default horizon."""
    out = []
    for label, s in selected:
        horizon = default_horizon(s)
        out.extend(Window(label, s, o, horizon) for o in evaluation_origins(s, horizon, windows))
    return out


def build_zero_shot_windows(selected: Sequence[tuple[str, Series]], windows: int) -> list[Window]:
    """Up to ``windows`` rolling windows at the end of each zero-shot series
    (:func:`mmntp.data.series_catalog.rolling_origins`); too-short series give none."""
    out = []
    for label, s in selected:
        horizon = default_horizon(s)
        out.extend(Window(label, s, o, horizon) for o in rolling_origins(s, horizon, windows))
    return out


# -- forecasters ----------------------------------------------------------------------


def window_seed(seed: int, window: Window) -> int:
    """A seed for one window, fixed by (seed, series name, origin) whatever else is selected."""
    entropy = [seed, zlib.crc32(window.series.name.encode()), window.origin]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))


def forecast_mmntp(
    pipe: Any,
    windows: Sequence[Window],
    num_samples: int,
    seed: int,
    levels: Sequence[float] = DEFAULT_QUANTILES,
    progress: Progress = _quiet,
    head: str | None = None,
) -> list[QuantileForecast]:
    """The pipeline's forecasts for ``windows``, their requests batched on its engine.

    All windows' requests share the engine (`Pipeline.generate_many`), so its batches mix
    windows; each window's sample paths share their context through the prefix cache.
    """
    items = [
        (
            TimeSeriesPart(w.context),
            TimeSeriesOutput(w.horizon, num_samples, tuple(levels), head),
            replace(sampling_defaults("timeseries"), seed=window_seed(seed, w)),
        )
        for w in windows
    ]

    def report(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            progress(f"mmntp: {done}/{total} windows forecast")

    return [_quantile_forecast(r, levels) for r in pipe.generate_many(items, report)]


def _quantile_forecast(result: Any, levels: Sequence[float]) -> QuantileForecast:
    if result.finish_reason not in ("length", "stop"):
        raise RuntimeError(f"a forecast request ended early ({result.finish_reason})")
    forecast = result.forecast
    quantiles = np.stack([forecast.quantiles[float(q)] for q in levels])
    return QuantileForecast(np.asarray(forecast.median, dtype=np.float64), quantiles)


def forecast_seasonal_naive(window: Window, levels: Sequence[float]) -> QuantileForecast:
    """The last season repeated; every quantile is the point forecast."""
    point = seasonal_naive(window.context, window.horizon, window.series.season_length)
    return QuantileForecast(point, np.tile(point, (len(levels), 1)))


def _has_season(n: int, m: int) -> bool:
    """Whether a seasonal ETS fit is attempted: a season, and at least three of them."""
    return m > 1 and n >= max(3 * m, 10 + 2 * (m // 2))


def _fit_ets(x: np.ndarray, horizon: int, trend: bool, season: int) -> tuple[np.ndarray, ...]:
    """(mean, variance), each (horizon,), of an additive-error ETS fit's forecast."""
    import pandas as pd
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    model = ETSModel(
        pd.Series(x),  # statsmodels 0.15's get_prediction needs a pandas index
        error="add",
        trend="add" if trend else None,
        damped_trend=trend,
        seasonal="add" if season > 1 else None,
        seasonal_periods=season if season > 1 else None,
        initialization_method="heuristic" if season > 1 else "estimated",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; a bad fit shows in the checks
        fit = model.fit(disp=False)
        pred = fit.get_prediction(start=len(x), end=len(x) + horizon - 1)
    mean = np.asarray(pred.predicted_mean, dtype=np.float64)
    var = np.asarray(pred.forecast_variance, dtype=np.float64)
    if mean.shape != (horizon,) or not (np.isfinite(mean).all() and np.isfinite(var).all()):
        raise ValueError("non-finite forecast")
    return mean, np.clip(var, 0.0, None)


def forecast_ets(window: Window, levels: Sequence[float]) -> tuple[QuantileForecast, str, str]:
    """Exponential smoothing (AAdA / AAdN, falling back to ANN): forecast, model, note.

    Missing context values are interpolated linearly first (ETS needs a complete series).
    The note is empty unless the fit fell back.
    """
    context = window.context
    observed = np.isfinite(context)
    t = np.arange(context.size)
    x = np.interp(t, t[observed], context[observed]) if not observed.all() else context
    m = window.series.season_length
    season = m if _has_season(x.size, m) else 1
    spec = "AAdA" if season > 1 else "AAdN"
    note = ""
    try:
        mean, var = _fit_ets(x, window.horizon, trend=True, season=season)
    except Exception as err:  # statsmodels raises many kinds; any failure falls back
        note = f"{spec} fit failed ({type(err).__name__}: {err}); used ANN"
        spec = "ANN"
        mean, var = _fit_ets(x, window.horizon, trend=False, season=1)
    z = np.array([NormalDist().inv_cdf(float(q)) for q in levels])
    quantiles = mean[None, :] + z[:, None] * np.sqrt(var)[None, :]
    return QuantileForecast(mean, quantiles), spec, note


# -- scoring --------------------------------------------------------------------------


def score_dataset(
    windows: Sequence[Window],
    forecasts: dict[str, Sequence[QuantileForecast]],
    levels: Sequence[float],
) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Per model: MASE of the median averaged over windows and WQL pooled over windows.

    A window whose MASE is undefined (constant context) is left out of every model's MASE,
    and said so in the returned notes.
    """
    notes: list[str] = []
    scaled = []
    for k, w in enumerate(windows):
        try:
            seasonal_error(w.context, w.series.season_length)
            scaled.append(k)
        except ValueError as err:
            notes.append(f"{w.series.name} @ {w.origin}: left out of MASE ({err})")
    if not scaled:
        raise ValueError(f"no window of dataset {windows[0].dataset!r} has a defined MASE")
    target = np.concatenate([w.target for w in windows])
    scores: dict[str, dict[str, float]] = {}
    for model, fcs in forecasts.items():
        mases = [
            mase(
                windows[k].target,
                fcs[k].median,
                windows[k].context,
                windows[k].series.season_length,
            )
            for k in scaled
        ]
        quantiles = np.concatenate([f.quantiles for f in fcs], axis=1)
        scores[model] = {
            "mase": float(np.mean(mases)),
            "wql": weighted_quantile_loss(target, quantiles, levels),
        }
    return scores, notes


def relative_scores(
    scores: dict[str, dict[str, float]], baseline: str = BASELINE
) -> dict[str, dict[str, float]]:
    """Each model's scores divided by the baseline's (so the baseline's are exactly 1.0)."""
    out = {}
    for model, metrics in scores.items():
        out[model] = {}
        for key, value in metrics.items():
            base = scores[baseline][key]
            if not base > 0.0:
                raise ValueError(f"baseline {key} is {base}; relative scores are undefined")
            out[model][key] = value / base
    return out


# -- the run --------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """What the evaluation ran on (CPU model, cores, threads, library versions)."""
    import statsmodels
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "statsmodels": statsmodels.__version__,
        "numpy": np.__version__,
    }


def _baselines(
    windows: Sequence[Window], levels: Sequence[float], progress: Progress
) -> tuple[list[QuantileForecast], list[QuantileForecast], list[str], list[str]]:
    """Seasonal-naive and ETS forecasts for every window, ETS model names and notes.

    ``notes[k]`` is window k's ETS fall-back note, or empty.
    """
    naive, ets, specs, notes = [], [], [], []
    for w in windows:
        naive.append(forecast_seasonal_naive(w, levels))
        fc, spec, note = forecast_ets(w, levels)
        ets.append(fc)
        specs.append(spec)
        notes.append(f"ets: {w.series.name} @ {w.origin}: {note}" if note else "")
        if note:
            progress(notes[-1])
    return naive, ets, specs, notes


def _dataset_entry(
    label: str,
    windows: list[Window],
    forecasts: dict[str, list[QuantileForecast]],
    specs: list[str],
    ets_notes: list[str],
    levels: Sequence[float],
) -> dict[str, Any]:
    """One dataset's report entry: its windows, scores, relative scores and notes."""
    scores, notes = score_dataset(windows, forecasts, levels)
    notes = [n for n in ets_notes if n] + notes
    first = windows[0].series
    missing = sum(int(np.isnan(w.context).any()) for w in windows)
    if missing:
        notes.append(f"ets: missing context values interpolated in {missing} windows")
    return {
        "name": label,
        "series": list(dict.fromkeys(w.series.name for w in windows)),
        "freq": first.freq,
        "season_length": first.season_length,
        "horizon": windows[0].horizon,
        "windows": len(windows),
        "ets_models": {spec: specs.count(spec) for spec in sorted(set(specs))},
        "scores": scores,
        "relative": relative_scores(scores),
        "notes": notes,
    }


def _table(
    pipe: Any,
    windows: list[Window],
    settings: EvalSettings,
    progress: Progress,
) -> dict[str, Any]:
    """One table: every model on ``windows``, scored per dataset, per frequency and overall."""
    labels = list(dict.fromkeys(w.dataset for w in windows))
    progress(f"{len(windows)} windows in {len(labels)} datasets: {', '.join(labels)}")
    t0 = time.perf_counter()  # mmntp first: a bad request fails before the baselines run
    mmntp = forecast_mmntp(
        pipe, windows, settings.num_samples, settings.seed, settings.levels, progress, settings.head
    )
    mmntp_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive, ets, specs, notes = _baselines(windows, settings.levels, progress)
    baseline_s = time.perf_counter() - t0
    progress(f"seasonal naive and ets done in {baseline_s:.1f}s")
    all_fc = {"mmntp": mmntp, "ets": ets, "seasonal_naive": naive}
    datasets = []
    for label in labels:
        idx = [k for k, w in enumerate(windows) if w.dataset == label]
        fcs = {m: [all_fc[m][k] for k in idx] for m in MODELS}
        picked = [windows[k] for k in idx]
        ets_notes = [notes[k] for k in idx]
        specs_here = [specs[k] for k in idx]
        datasets.append(_dataset_entry(label, picked, fcs, specs_here, ets_notes, settings.levels))
    freqs = [f for f in FREQ_ORDER if any(d["freq"] == f for d in datasets)]
    return {
        "windows": len(windows),
        "seconds": {"mmntp": mmntp_s, "baselines": baseline_s},
        "datasets": datasets,
        "by_frequency": {f: _aggregate([d for d in datasets if d["freq"] == f]) for f in freqs},
        "geometric_mean_relative": _aggregate(datasets),
        "forecasts": [
            {"dataset": w.dataset, "series": w.series.name, "origin": w.origin, "fc": mmntp[k]}
            for k, w in enumerate(windows)
        ],
    }


def _aggregate(datasets: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Geometric means of the datasets' relative scores, per model."""
    return {
        m: {
            key: geometric_mean([d["relative"][m][key] for d in datasets])
            for key in ("mase", "wql")
        }
        for m in MODELS
    }


TABLE_DESCRIPTIONS = {
    "in_domain": "in-domain: the final windows of series whose earlier part training saw",
    "zero_shot": "zero-shot: series no training recipe reads (split by series)",
}


def evaluate(pipe: Any, settings: EvalSettings, progress: Progress = _quiet) -> dict[str, Any]:
    """Run the evaluation; returns the report (what ``--json`` prints).

    ``report["in_domain"]`` and ``report["zero_shot"]`` are the two tables (each present
    when selected); the mmntp forecasts stay in memory under each table's ``forecasts``
    for ``--plot`` and are dropped from the JSON by :func:`to_json`.
    """
    started = time.perf_counter()
    if settings.head is None:  # report the head the model defaults to
        settings = replace(settings, head=pipe.capabilities().series_heads[0])
    report: dict[str, Any] = {
        "benchmark": "timeseries",
        "model": getattr(pipe, "name", None),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "settings": settings.to_dict(),
        "machine": machine_info(),
        "models": list(MODELS),
    }
    for name, windows in table_windows(settings).items():
        progress(f"{name} table")
        report[name] = {"description": TABLE_DESCRIPTIONS[name]} | _table(
            pipe, windows, settings, progress
        )
    if "zero_shot" in report:
        report["zero_shot"]["split_digest"] = default_split().digest()
    if settings.latency_runs:
        report["latency"] = forecast_latency(pipe, settings.head, settings.latency_runs)
    report["seconds"] = {"total": time.perf_counter() - started}
    return report


LATENCY_HORIZON, LATENCY_SAMPLES = 24, 20


def forecast_latency(pipe: Any, head: str, runs: int) -> dict[str, Any]:
    """Wall time of one 24-step, 20-path forecast alone on the pipeline (the issue's
    speed figure): one warm-up, then ``runs`` timed calls on elnino's last 512 values."""
    context = next(s for s in bundled_series() if s.name == "elnino").values[-512:]
    output = TimeSeriesOutput(LATENCY_HORIZON, LATENCY_SAMPLES, DEFAULT_QUANTILES, head)
    params = replace(sampling_defaults("timeseries"), seed=0)
    times = []
    for k in range(runs + 1):
        t0 = time.perf_counter()
        pipe(TimeSeriesPart(context), output, params)
        if k:  # the first call warms caches up
            times.append(time.perf_counter() - t0)
    return {
        "head": head,
        "horizon": LATENCY_HORIZON,
        "num_samples": LATENCY_SAMPLES,
        "context": int(context.size),
        "runs_ms": [1000 * t for t in times],
        "p50_ms": 1000 * float(np.median(times)),
    }


def to_json(report: dict[str, Any]) -> dict[str, Any]:
    """The report without the in-memory forecasts (what ``--json`` and ``--out`` write)."""
    return {
        k: ({kk: vv for kk, vv in v.items() if kk != "forecasts"} if k in TABLES else v)
        for k, v in report.items()
    }


@dataclass
class _Table:
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def render(self) -> str:
        widths = [max(len(r[i]) for r in self.rows) for i in range(len(self.rows[0]))]
        return "\n".join(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
            )
            for r in self.rows
        )


def _format_one(table_report: dict[str, Any]) -> list[str]:
    table = _Table()
    table.add(
        "dataset", "freq", "h", "windows", "mmntp MASE", "mmntp WQL", "ets MASE", "ets WQL",
        "naive MASE", "naive WQL",
    )  # fmt: skip
    for d in table_report["datasets"]:
        rel, naive = d["relative"], d["scores"][BASELINE]
        table.add(
            d["name"], d["freq"], d["horizon"], d["windows"],
            f"{rel['mmntp']['mase']:.3f}", f"{rel['mmntp']['wql']:.3f}",
            f"{rel['ets']['mase']:.3f}", f"{rel['ets']['wql']:.3f}",
            f"{naive['mase']:.3f}", f"{naive['wql']:.3f}",
        )  # fmt: skip
    rows = [(f"geometric mean {f}", agg) for f, agg in table_report["by_frequency"].items()]
    rows.append(("geometric mean", table_report["geometric_mean_relative"]))
    for label, agg in rows:
        n = sum(
            d["windows"]
            for d in table_report["datasets"]
            if label == "geometric mean" or d["freq"] == label.rsplit(" ", 1)[1]
        )
        table.add(
            label, "", "", n,
            f"{agg['mmntp']['mase']:.3f}", f"{agg['mmntp']['wql']:.3f}",
            f"{agg['ets']['mase']:.3f}", f"{agg['ets']['wql']:.3f}", "-", "-",
        )  # fmt: skip
    lines = [table.render()]
    lines += [f"note: {n}" for d in table_report["datasets"] for n in d["notes"]]
    return lines


def format_table(report: dict[str, Any]) -> str:
    """The report as text: the in-domain table, then the zero-shot table, each labelled."""
    lines = [
        "Relative to seasonal naive (lower is better; < 1 beats it); naive columns are absolute."
    ]
    for name in TABLES:
        if name in report:
            lines += ["", f"== {report[name]['description']} =="]
            lines += _format_one(report[name])
    if "latency" in report:
        lat = report["latency"]
        lines.append(
            f"latency ({lat['head']} head): {lat['horizon']} steps x {lat['num_samples']} paths "
            f"from {lat['context']} values, p50 {lat['p50_ms']:.0f} ms over "
            f"{len(lat['runs_ms'])} runs"
        )
    lines.append(f"took {report['seconds']['total']:.1f}s on {report['machine']['nproc']} cores")
    return "\n".join(lines)


def plot_zero_shot(path: str, report: dict[str, Any]) -> None:
    """Draw each zero-shot series' last window: history, actual, median and 80 % band."""
    from mmntp.eval.plot import ForecastPanel, plot_forecast_grid

    if "zero_shot" not in report:
        raise ValueError("the report has no zero-shot table to plot")
    levels = report["settings"]["quantile_levels"]
    last: dict[str, dict[str, Any]] = {}
    for entry in report["zero_shot"]["forecasts"]:
        last[entry["series"]] = entry  # windows ascend, so the last one wins
    by_name = {s.name: s for s in zero_shot_series()}
    panels = []
    for name, entry in last.items():
        s, fc, origin = by_name[name], entry["fc"], entry["origin"]
        horizon = fc.median.size
        panels.append(
            ForecastPanel(
                f"{name} ({s.freq}, h={horizon})",
                s.values[:origin],
                s.values[origin : origin + horizon],
                fc.median,
                {float(q): fc.quantiles[i] for i, q in enumerate(levels)},
            )
        )
    plot_forecast_grid(path, panels)
