"""Reading a user's series for forecasting and writing the forecast back, as CSV or JSON.

Accepted inputs:

* ``.csv`` with one numeric column, or two columns ``timestamp,value``; a header row is
  optional (a first row whose value cell is not a number is taken as the header).
  Trailing blank lines are ignored; an interior blank line is a missing value.
* ``.json`` holding a list of numbers (``null`` = missing) or an object
  ``{"values": [...], "timestamps": [...]}`` (``timestamps`` optional).

Empty cells and ``NA`` / ``nan`` / ``null`` (any case) are missing and become NaN. Every
problem raises ``ValueError`` naming the file and, where it applies, the line and cell.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "ForecastTable",
    "check_context",
    "read_forecast_csv",
    "read_series",
    "write_forecast_csv",
]

_MISSING = frozenset({"", "na", "n/a", "nan", "null", "none"})


def _parse_cell(cell: str, where: str) -> float:
    """One CSV cell as a float; NaN for a missing marker."""
    text = cell.strip()
    if text.lower() in _MISSING:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: {cell!r} is not a number") from None
    if math.isinf(value):
        raise ValueError(f"{where}: {cell!r} is infinite")
    if math.isnan(value):  # spellings such as "NaN" with a sign
        return math.nan
    return value


def _is_number_or_missing(cell: str) -> bool:
    text = cell.strip()
    if text.lower() in _MISSING:
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def _finish(values: list[float], timestamps: list[str] | None, path: Path):
    if not values:
        raise ValueError(f"{path}: no values")
    arr = np.asarray(values, dtype=np.float64)
    if np.isnan(arr).all():
        raise ValueError(f"{path}: all {arr.size} values are missing")
    return arr, timestamps


def _read_csv(path: Path) -> tuple[np.ndarray, list[str] | None]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    while rows and not any(c.strip() for c in rows[-1]):
        rows.pop()
    if not rows:
        raise ValueError(f"{path}: empty file")
    width = len(rows[0])
    if width > 2:
        raise ValueError(
            f"{path}: line 1 has {width} columns; expected 1 (value) or 2 (timestamp,value)"
        )
    header = not _is_number_or_missing(rows[0][-1])
    values: list[float] = []
    timestamps: list[str] | None = [] if width == 2 else None
    for lineno, row in enumerate(rows, start=1):
        if lineno == 1 and header:
            continue
        cells = row if row else [""]  # a blank line is one empty cell
        if len(cells) != width:
            raise ValueError(
                f"{path}: line {lineno} has {len(cells)} columns but line 1 has {width}"
            )
        if timestamps is not None:
            stamp = cells[0].strip()
            if not stamp:
                raise ValueError(f"{path}: line {lineno}: empty timestamp")
            timestamps.append(stamp)
        values.append(_parse_cell(cells[-1], f"{path}: line {lineno}"))
    if not values:
        raise ValueError(f"{path}: header but no values")
    return _finish(values, timestamps, path)


def _json_number(item: object, where: str) -> float:
    if item is None:
        return math.nan
    if isinstance(item, bool) or not isinstance(item, int | float):
        raise ValueError(f"{where}: {item!r} is not a number")
    value = float(item)
    if math.isinf(value):
        raise ValueError(f"{where}: {item!r} is infinite")
    return value


def _read_json(path: Path) -> tuple[np.ndarray, list[str] | None]:
    text = path.read_text(encoding="utf-8-sig")
    if not text.strip():
        raise ValueError(f"{path}: empty file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    timestamps: list[str] | None = None
    if isinstance(data, dict):
        unknown = sorted(set(data) - {"values", "timestamps"})
        if unknown:
            raise ValueError(f"{path}: unexpected keys {unknown}; expected 'values', 'timestamps'")
        if "values" not in data:
            raise ValueError(f"{path}: object has no 'values' list")
        items = data["values"]
        if "timestamps" in data:
            timestamps = data["timestamps"]
            if not isinstance(timestamps, list) or not all(isinstance(s, str) for s in timestamps):
                raise ValueError(f"{path}: 'timestamps' must be a list of strings")
    else:
        items = data
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a list of numbers, got {type(items).__name__}")
    if timestamps is not None and len(timestamps) != len(items):
        raise ValueError(
            f"{path}: {len(timestamps)} timestamps but {len(items)} values; they must match"
        )
    values = [_json_number(x, f"{path}: item {i}") for i, x in enumerate(items)]
    return _finish(values, timestamps, path)


def read_series(path: str | Path) -> tuple[np.ndarray, list[str] | None]:
    """A user's series: values float64 shaped (length,) with NaN for missing, and the
    timestamps as given (strings) or None when the file has none."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".json":
        return _read_json(path)
    raise ValueError(f"{path}: unknown extension {path.suffix!r}; expected .csv or .json")


def check_context(values: np.ndarray, min_length: int) -> None:
    """Raise ``ValueError`` when ``values`` has fewer than ``min_length`` observed (finite) points."""
    observed = int(np.isfinite(np.asarray(values, dtype=np.float64)).sum())
    if observed < min_length:
        raise ValueError(
            f"context has {observed} observed values; at least {min_length} are needed"
        )


@dataclass(frozen=True)
class ForecastTable:
    """A forecast as stored on disk: arrays shaped (horizon,), quantiles keyed by level."""

    median: np.ndarray
    quantiles: dict[float, np.ndarray]
    timestamps: list[str] | None = None


def _quantile_column(level: float) -> str:
    return f"q{level:g}"


def write_forecast_csv(
    path: str | Path,
    median: np.ndarray,
    quantiles: Mapping[float, np.ndarray],
    timestamps: list[str] | None = None,
) -> None:
    """Write one row per forecast step: ``[timestamp,]median,q0.1,...`` (levels ascending).

    ``median`` and every quantile array are shaped (horizon,); ``timestamps``, when given,
    has one string per step. Values are written in shortest round-trip form.
    """
    median = np.asarray(median, dtype=np.float64)
    if median.ndim != 1:
        raise ValueError(f"median must be 1-D (horizon,), got shape {median.shape}")
    horizon = median.shape[0]
    levels = sorted(float(q) for q in quantiles)
    columns = [median]
    for level in levels:
        if not 0.0 < level < 1.0:
            raise ValueError(f"quantile level must be in (0, 1), got {level}")
        q = np.asarray(quantiles[level], dtype=np.float64)
        if q.shape != (horizon,):
            raise ValueError(f"quantile {level:g} has shape {q.shape}; expected ({horizon},)")
        columns.append(q)
    header = ["median"] + [_quantile_column(level) for level in levels]
    if timestamps is not None:
        if len(timestamps) != horizon:
            raise ValueError(f"{len(timestamps)} timestamps for a horizon of {horizon}")
        header = ["timestamp", *header]
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        for step in range(horizon):
            row = [repr(float(col[step])) for col in columns]
            writer.writerow(row if timestamps is None else [timestamps[step], *row])


def read_forecast_csv(path: str | Path) -> ForecastTable:
    """Read a file written by :func:`write_forecast_csv`."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise ValueError(f"{path}: empty file")
    header, body = rows[0], rows[1:]
    has_stamp = header[:1] == ["timestamp"]
    names = header[1:] if has_stamp else header
    if not names or names[0] != "median" or not all(n.startswith("q") for n in names[1:]):
        raise ValueError(f"{path}: header {header} is not [timestamp,]median,q<level>,...")
    for lineno, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ValueError(
                f"{path}: line {lineno} has {len(row)} columns; header has {len(header)}"
            )
    offset = 1 if has_stamp else 0
    table = np.array([[float(c) for c in row[offset:]] for row in body], dtype=np.float64).reshape(
        len(body), len(names)
    )  # table: [horizon, 1 + n_quantiles]
    quantiles = {float(n[1:]): table[:, j + 1].copy() for j, n in enumerate(names[1:])}
    timestamps = [row[0] for row in body] if has_stamp else None
    return ForecastTable(table[:, 0].copy(), quantiles, timestamps)
