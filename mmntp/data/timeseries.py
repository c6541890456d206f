"""Time-series data: real bundled series, the train/evaluation split, and synthetic sampling.

Real series come from the datasets that ship inside statsmodels (no network). Training
samples come from a :class:`SeriesSampler` that mixes two augmentations in the style of
Chronos: KernelSynth (paths drawn from random Gaussian-process kernels) and TSMixup
(convex mixtures of mean-scaled windows of real training series).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "HOLDOUT_WINDOWS",
    "Series",
    "SEASON_LENGTHS",
    "SeriesSampler",
    "augment",
    "bundled_series",
    "evaluation_origins",
    "holdout_length",
    "kernel_synth",
    "seasonal_synth",
    "train_part",
    "ts_mixup",
]

# Default number of rolling evaluation origins at the end of each series.
HOLDOUT_WINDOWS = 3
# Forecast horizon per frequency (the Monash / M4 conventions Chronos evaluates with).
FORECAST_HORIZONS = {"Y": 6, "Q": 8, "M": 18, "W": 13, "D": 14, "H": 48}


def default_horizon(series: Series) -> int:
    """The evaluation horizon for a series' frequency."""
    try:
        return FORECAST_HORIZONS[series.freq]
    except KeyError:
        raise ValueError(f"no default horizon for frequency {series.freq!r}") from None


@dataclass(frozen=True)
class Series:
    """One named univariate series with its sampling frequency and seasonal period.

    ``values`` is float64 shaped (length,) and may hold NaN for missing observations.
    ``freq`` is a pandas-style code ("Y", "Q", "M", "W", "D", ...) and ``season_length``
    the period a seasonal-naive forecast repeats (1 yearly, 4 quarterly, 12 monthly,
    52 weekly).
    """

    name: str
    values: np.ndarray
    freq: str
    season_length: int

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        if values.ndim != 1:
            raise ValueError(f"Series {self.name!r}: values must be 1-D, got shape {values.shape}")
        if self.season_length < 1:
            raise ValueError(
                f"Series {self.name!r}: season_length must be >= 1, got {self.season_length}"
            )
        values.setflags(write=False)
        object.__setattr__(self, "values", values)

    def __len__(self) -> int:
        return int(self.values.shape[0])


# ---------------------------------------------------------------------------------------
# Bundled real series
# ---------------------------------------------------------------------------------------


def _sunspots() -> list[Series]:
    from statsmodels.datasets import sunspots

    df = sunspots.load_pandas().data
    return [Series("sunspots", df["SUNACTIVITY"].to_numpy(), "Y", 1)]


def _nile() -> list[Series]:
    from statsmodels.datasets import nile

    df = nile.load_pandas().data
    return [Series("nile", df["volume"].to_numpy(), "Y", 1)]


def _co2() -> list[Series]:
    from statsmodels.datasets import co2

    # Weekly (W-SAT) with gaps recorded as NaN; the gaps are kept, not filled.
    df = co2.load_pandas().data
    return [Series("co2", df["co2"].to_numpy(), "W", 52)]


def _elnino() -> list[Series]:
    from statsmodels.datasets import elnino

    # A year x month table; row-major flattening gives calendar order.
    df = elnino.load_pandas().data.sort_values("YEAR")
    months = df.drop(columns="YEAR").to_numpy(dtype=np.float64)
    return [Series("elnino", months.reshape(-1), "M", 12)]


def _macrodata() -> list[Series]:
    from statsmodels.datasets import macrodata

    df = macrodata.load_pandas().data
    return [
        Series(f"macrodata/{c}", df[c].to_numpy(), "Q", 4)
        for c in ("realgdp", "cpi", "unemp", "infl")
    ]


def _elec_equip() -> list[Series]:
    from statsmodels.datasets import elec_equip

    df = elec_equip.load_pandas().data
    return [Series("elec_equip", df.iloc[:, 0].to_numpy(), "M", 12)]


def _danish_data() -> list[Series]:
    from statsmodels.datasets import danish_data

    df = danish_data.load_pandas().data
    return [Series(f"danish_data/{c}", df[c].to_numpy(), "Q", 4) for c in ("lrm", "lry", "ibo")]


def _interest_inflation() -> list[Series]:
    from statsmodels.datasets import interest_inflation

    df = interest_inflation.load_pandas().data
    return [Series(f"interest_inflation/{c}", df[c].to_numpy(), "Q", 4) for c in ("Dp", "R")]


_LOADERS: tuple[Callable[[], list[Series]], ...] = (
    _sunspots,
    _nile,
    _co2,
    _elnino,
    _macrodata,
    _elec_equip,
    _danish_data,
    _interest_inflation,
)


@functools.lru_cache(maxsize=1)
def bundled_series() -> tuple[Series, ...]:
    """Real series shipped inside statsmodels, loaded offline, in a fixed order.

    Returns a tuple (cached, so callers share it; the arrays are read-only):
    sunspots (Y), nile (Y), co2 (W, with NaN gaps), elnino (M), macrodata realgdp/cpi/
    unemp/infl (Q), elec_equip (M), danish_data lrm/lry/ibo (Q), interest_inflation
    Dp/R (Q).
    """
    out: list[Series] = []
    for load in _LOADERS:
        out.extend(load())
    return tuple(out)


# ---------------------------------------------------------------------------------------
# Train / evaluation split
# ---------------------------------------------------------------------------------------


def holdout_length(
    series: Series | np.ndarray, horizon: int, windows: int = HOLDOUT_WINDOWS
) -> int:
    """Number of final points reserved for evaluation: ``horizon * windows``.

    Convention: evaluation uses ``windows`` rolling origins at the end of the series,
    spaced ``horizon`` apart, each forecasting the next ``horizon`` points, so the last
    window ends at the final observation and the windows tile the final
    ``horizon * windows`` points without overlap. Training may only see values before the
    first origin, i.e. ``values[: len - horizon * windows]``. Raises ``ValueError`` when
    that would leave no training points.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if windows < 1:
        raise ValueError(f"windows must be >= 1, got {windows}")
    n = len(series)
    holdout = horizon * windows
    if holdout >= n:
        raise ValueError(
            f"holdout of {windows} windows x horizon {horizon} = {holdout} points "
            f"leaves nothing to train on in a series of length {n}"
        )
    return holdout


def evaluation_origins(
    series: Series | np.ndarray, horizon: int, windows: int = HOLDOUT_WINDOWS
) -> list[int]:
    """Start indices of the evaluation windows, ascending.

    Origin ``o`` means: the context is ``values[:o]`` and the target ``values[o:o + horizon]``.
    The first origin equals ``len - holdout_length(...)``.
    """
    n = len(series)
    first = n - holdout_length(series, horizon, windows)
    return [first + i * horizon for i in range(windows)]


def train_part(series: Series, holdout: int) -> np.ndarray:
    """The series without its final ``holdout`` points: what training may see."""
    if holdout < 0:
        raise ValueError(f"holdout must be >= 0, got {holdout}")
    if holdout >= len(series):
        raise ValueError(
            f"holdout {holdout} leaves nothing of {series.name!r} (length {len(series)})"
        )
    return series.values[: len(series) - holdout]


# ---------------------------------------------------------------------------------------
# KernelSynth
# ---------------------------------------------------------------------------------------

# Periods in time steps; each is rescaled to the unit time axis by the path length.
_PERIODS = (4, 7, 12, 24, 30, 48, 52, 96, 168, 365)
_RBF_SCALES = (0.01, 0.03, 0.1, 0.3, 1.0, 10.0)
_RQ_ALPHAS = (0.1, 1.0, 10.0)
_MAX_JITTER_TRIES = 6

_Kernel = Callable[[np.ndarray], np.ndarray]  # d = t[:, None] - t[None, :] -> K


def _random_kernel(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """One covariance matrix, shaped (L, L), from a randomly chosen kernel family."""
    length = t.shape[0]
    d = t[:, None] - t[None, :]  # d: [L, L]
    family = rng.integers(6)
    if family == 0:  # periodic
        periods = [p for p in _PERIODS if 2 <= p <= length] or [max(2, length)]
        period = periods[rng.integers(len(periods))] / length
        scale = rng.choice((0.5, 1.0, 2.0))
        return np.exp(-2.0 * np.sin(np.pi * np.abs(d) / period) ** 2 / scale**2)
    if family == 1:  # linear trend (dot product around a random offset)
        offset = rng.uniform(0.0, 1.0)
        sigma0 = rng.choice((0.0, 0.1, 1.0))
        u = t - offset
        return sigma0**2 + np.outer(u, u)
    if family == 2:  # RBF
        scale = _RBF_SCALES[rng.integers(len(_RBF_SCALES))]
        return np.exp(-0.5 * (d / scale) ** 2)
    if family == 3:  # rational quadratic
        alpha = _RQ_ALPHAS[rng.integers(len(_RQ_ALPHAS))]
        scale = _RBF_SCALES[rng.integers(len(_RBF_SCALES))]
        return (1.0 + d**2 / (2.0 * alpha * scale**2)) ** (-alpha)
    if family == 4:  # white noise
        return rng.uniform(0.01, 0.3) ** 2 * np.eye(length)
    return np.full((length, length), rng.uniform(0.1, 1.0) ** 2)  # constant


def _sample_gp(rng: np.random.Generator, cov: np.ndarray) -> np.ndarray:
    """One zero-mean path with covariance ``cov``, via Cholesky with growing jitter."""
    length = cov.shape[0]
    z = rng.standard_normal(length)
    base = max(float(np.mean(np.diag(cov))), 1e-12)
    jitter = 1e-8 * base
    for _ in range(_MAX_JITTER_TRIES):
        try:
            chol = np.linalg.cholesky(cov + jitter * np.eye(length))
            return chol @ z
        except np.linalg.LinAlgError:
            jitter *= 100.0
    # Still indefinite after heavy jitter: fall back to a clipped eigendecomposition.
    w, v = np.linalg.eigh(cov)
    return v @ (np.sqrt(np.clip(w, 0.0, None)) * z)


def kernel_synth(rng: np.random.Generator, length: int, max_kernels: int = 5) -> np.ndarray:
    """A synthetic series from a random GP kernel composition (Chronos' KernelSynth idea).

    Draws 1..``max_kernels`` kernels from a bank (periodic at common seasonalities,
    linear trend, RBF and rational quadratic at several length scales, white noise,
    constant) on the time axis [0, 1], joins them one by one with a random ``+`` or
    ``*``, and samples one zero-mean path. Returns float64 shaped (length,); fully
    determined by ``rng``.
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if max_kernels < 1:
        raise ValueError(f"max_kernels must be >= 1, got {max_kernels}")
    t = np.linspace(0.0, 1.0, length)
    n_kernels = int(rng.integers(1, max_kernels + 1))
    cov = _random_kernel(rng, t)
    for _ in range(n_kernels - 1):
        other = _random_kernel(rng, t)
        cov = cov + other if rng.random() < 0.5 else cov * other
    return _sample_gp(rng, cov)


# ---------------------------------------------------------------------------------------
# Shape-teaching synthesis: a season on a trend, then scale / shift augmentation
# ---------------------------------------------------------------------------------------

# Season lengths in steps (quarterly 4, daily-of-week 7, monthly 12, hourly 24, weekly 52,
# business week 5, half-hourly 48, hourly-of-week 168), each drawn equally often.
SEASON_LENGTHS = (4, 7, 12, 24, 52, 5, 48, 168)


def _trend_kernel(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A slow component's covariance, (L, L): linear, long RBF, or their sum or product."""
    d = t[:, None] - t[None, :]
    u = t - rng.uniform(0.0, 1.0)
    linear = rng.uniform(0.0, 0.5) ** 2 + np.outer(u, u)  # dot product: a straight trend
    rbf = np.exp(-0.5 * (d / rng.choice((0.2, 0.5, 1.0))) ** 2)  # a smooth level drift
    choice = rng.integers(4)
    return (linear, rbf, linear + rbf, linear * rbf)[choice]


def seasonal_synth(
    rng: np.random.Generator, length: int, period: int | None = None
) -> tuple[np.ndarray, int]:
    """A Gaussian-process path with a season of exactly ``period`` steps on a trend.

    The covariance is ``trend + a * periodic`` or ``trend * periodic`` (multiplicative
    seasons grow with the level) plus a little white noise; ``period`` defaults to a draw
    from :data:`SEASON_LENGTHS` that fits twice in ``length``. Returns (float64 path shaped
    (length,), the period); fully determined by ``rng``.
    """
    if length < 4:
        raise ValueError(f"length must be >= 4, got {length}")
    if period is None:
        fits = [p for p in SEASON_LENGTHS if 2 * p <= length] or [2]
        period = fits[int(rng.integers(len(fits)))]
    if not 2 <= period <= length:
        raise ValueError(f"period must be in [2, length={length}], got {period}")
    t = np.arange(length) / length  # one step = 1 / length, so the period is exact in steps
    d = np.abs(t[:, None] - t[None, :])
    scale = rng.choice((0.5, 1.0, 2.0))  # smaller: sharper peaks within the season
    periodic = np.exp(-2.0 * np.sin(np.pi * d * length / period) ** 2 / scale**2)
    trend = _trend_kernel(rng, t)
    if rng.random() < 0.7:
        cov = trend + rng.uniform(0.3, 3.0) * periodic
    else:
        cov = (trend + rng.uniform(0.5, 2.0)) * periodic
    cov = cov + rng.uniform(0.01, 0.1) ** 2 * np.eye(length)
    return _sample_gp(rng, cov), period


def augment(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """``x`` scaled by a log-uniform factor (1e-2..1e3) and shifted by up to 3 of its spreads.

    A shift moves the level against the variation, which the tokenizer's mean scaling
    otherwise never shows (a GP path always hovers around 0).
    """
    observed = x[np.isfinite(x)]
    spread = float(observed.std()) if observed.size else 0.0
    shifted = x + rng.uniform(-3.0, 3.0) * (spread if spread > 0 else 1.0)
    return shifted * 10.0 ** rng.uniform(-2.0, 3.0)


# ---------------------------------------------------------------------------------------
# TSMixup
# ---------------------------------------------------------------------------------------


def _window(rng: np.random.Generator, x: np.ndarray, length: int) -> np.ndarray:
    """A random window of ``length`` from ``x``, left-padded with NaN when ``x`` is shorter."""
    n = x.shape[0]
    if n >= length:
        start = int(rng.integers(0, n - length + 1))
        return x[start : start + length].astype(np.float64, copy=True)
    out = np.full(length, np.nan)
    out[length - n :] = x
    return out


def _mean_scale(x: np.ndarray) -> np.ndarray:
    """``x`` divided by its mean absolute observed value (unchanged when that is 0 or undefined)."""
    observed = np.abs(x[np.isfinite(x)])
    scale = float(observed.mean()) if observed.size else 0.0
    return x / scale if scale > 0.0 else x


def ts_mixup(
    rng: np.random.Generator, pool: Sequence[np.ndarray], length: int, k_max: int = 3
) -> np.ndarray:
    """A convex mixture of mean-scaled random windows from ``pool`` (TSMixup).

    Picks k in 1..``k_max`` pool series (without replacement while the pool allows),
    takes a random window of ``length`` from each (shorter series are used whole and
    left-padded with NaN), divides each by its mean absolute value, and combines them with
    Dirichlet(1) weights. At each step the weights are renormalised over the components
    observed there; a step observed by none stays NaN. Returns float64 shaped (length,).
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if k_max < 1:
        raise ValueError(f"k_max must be >= 1, got {k_max}")
    if len(pool) == 0:
        raise ValueError("pool is empty")
    k = int(rng.integers(1, k_max + 1))
    idx = rng.choice(len(pool), size=k, replace=k > len(pool))
    parts = np.stack(
        [_mean_scale(_window(rng, np.asarray(pool[i], dtype=np.float64), length)) for i in idx]
    )  # parts: [k, length]
    weights = rng.dirichlet(np.ones(k))  # weights: [k]
    observed = np.isfinite(parts)
    w = weights[:, None] * observed  # w: [k, length]
    total = w.sum(axis=0)
    mixed = (w * np.where(observed, parts, 0.0)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0.0, mixed / total, np.nan)


# ---------------------------------------------------------------------------------------
# Sampler
# ---------------------------------------------------------------------------------------


@dataclass
class SeriesSampler:
    """Draws training series: KernelSynth with probability ``kernel_synth_prob``, else TSMixup.

    ``pool`` holds real training arrays (already cut with :func:`train_part`, so held-out
    points never reach training). ``lengths`` are the lengths drawn from uniformly when
    :meth:`sample` is called without one. A KernelSynth draw is a :func:`seasonal_synth`
    path with probability ``seasonal_prob``; with ``augment`` every sample goes through
    :func:`augment`. Nothing is kept between samples (memory does not grow with a run).
    Output is fully determined by the generator.
    """

    pool: Sequence[np.ndarray]
    kernel_synth_prob: float = 0.5
    lengths: Sequence[int] = (512,)
    max_kernels: int = 5
    k_max: int = 3
    seasonal_prob: float = 0.0
    augment: bool = False

    def __post_init__(self) -> None:
        for name in ("kernel_synth_prob", "seasonal_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.pool = [np.asarray(x, dtype=np.float64).reshape(-1) for x in self.pool]
        self.pool = [x for x in self.pool if np.isfinite(x).any()]
        if not self.pool and self.kernel_synth_prob < 1.0:
            raise ValueError(
                "pool has no series with an observed value, "
                f"but kernel_synth_prob={self.kernel_synth_prob} needs TSMixup"
            )
        self.lengths = tuple(int(n) for n in self.lengths)
        if not self.lengths or min(self.lengths) < 1:
            raise ValueError(f"lengths must be non-empty and >= 1, got {self.lengths}")

    def sample(self, rng: np.random.Generator, length: int | None = None) -> np.ndarray:
        """One series, float64 shaped (length,); ``length`` defaults to a draw from ``lengths``."""
        if length is None:
            length = self.lengths[int(rng.integers(len(self.lengths)))]
        if rng.random() < self.kernel_synth_prob:
            # The extra draw only when asked, so samplers without it keep their old streams.
            if self.seasonal_prob > 0.0 and length >= 4 and rng.random() < self.seasonal_prob:
                x = seasonal_synth(rng, length)[0]
            else:
                x = kernel_synth(rng, length, self.max_kernels)
        else:
            x = ts_mixup(rng, self.pool, length, self.k_max)
        return augment(rng, x) if self.augment else x
