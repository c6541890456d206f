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
from typing import TextIO

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


_TIME_NAMES = frozenset(
    {"t", "time", "timestamp", "date", "datetime", "ds", "year", "month", "week", "day"}
)


def _time_like(name: str) -> bool:
    name = name.strip().lower()
    return name in _TIME_NAMES or "date" in name or "time" in name


def _pick_column(spec: str | int | None, names: list[str] | None, width: int, where: str):
    """A column given by header name or 0-based index (negative from the end) -> index."""
    if spec is None:
        return None
    try:
        index = int(spec)
    except ValueError:
        if names is None or str(spec) not in names:
            known = ", ".join(repr(n) for n in names) if names else "the file has no header"
            raise ValueError(f"{where} {spec!r} is not a column ({known})") from None
        return names.index(str(spec))
    if not -width <= index < width:
        raise ValueError(f"{where} {index} is out of range for {width} columns")
    return index % width


def _read_csv(
    path: Path, column: str | int | None = None, timestamp_column: str | int | None = None
) -> tuple[np.ndarray, list[str] | None]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    while rows and not any(c.strip() for c in rows[-1]):
        rows.pop()
    if not rows:
        raise ValueError(f"{path}: empty file")
    width = len(rows[0])
    if column is None and timestamp_column is None and width > 2:
        raise ValueError(
            f"{path}: line 1 has {width} columns; expected 1 (value) or 2 (timestamp,value)"
            f" — pick the series with --column NAME|INDEX (columns: {', '.join(rows[0])})"
        )
    named = any(not str(c).lstrip("-").isdigit() for c in (column, timestamp_column) if c)
    header = named or not _is_number_or_missing(rows[0][-1])
    names = [c.strip() for c in rows[0]] if header else None
    where = f"{path}: --column"
    value_at = _pick_column(column, names, width, where)
    stamp_at = _pick_column(timestamp_column, names, width, f"{path}: --timestamp-column")
    first = rows[1] if header and len(rows) > 1 else rows[0]
    if value_at is None:
        if width == 1:
            value_at = 0
        elif stamp_at is not None and width == 2:
            value_at = 1 - stamp_at
        elif stamp_at is not None:
            raise ValueError(f"{path}: {width} columns; pick the series with --column NAME|INDEX")
        else:
            value_at, stamp_at = 1, 0
            if names and not _time_like(names[0]) and _is_number_or_missing(first[0]):
                raise ValueError(
                    f"{path}: columns {names[0]!r} and {names[1]!r} both hold numbers; pick the "
                    f"series with --column {names[1]} (or --column {names[0]}), and "
                    "--timestamp-column if one of them holds the times"
                )
    elif stamp_at is None and width == 2:
        other = 1 - value_at
        if (names and _time_like(names[other])) or not _is_number_or_missing(first[other]):
            stamp_at = other
    if stamp_at == value_at:
        raise ValueError(f"{path}: the series and its timestamps are the same column")
    values: list[float] = []
    timestamps: list[str] | None = [] if stamp_at is not None else None
    for lineno, row in enumerate(rows, start=1):
        if lineno == 1 and header:
            continue
        cells = row if row else [""]  # a blank line is one empty cell
        if len(cells) != width:
            raise ValueError(
                f"{path}: line {lineno} has {len(cells)} columns but line 1 has {width}"
            )
        if timestamps is not None:
            stamp = cells[stamp_at].strip()
            if not stamp:
                raise ValueError(f"{path}: line {lineno}: empty timestamp")
            timestamps.append(stamp)
        values.append(_parse_cell(cells[value_at], f"{path}: line {lineno}"))
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


def read_series(
    path: str | Path,
    column: str | int | None = None,
    timestamp_column: str | int | None = None,
) -> tuple[np.ndarray, list[str] | None]:
    """A user's series: values float64 shaped (length,) with NaN for missing, and the
    timestamps as given (strings) or None when the file has none.

    For a CSV, `column` and `timestamp_column` pick columns by header name or 0-based
    index; two numeric columns under a header neither of which names a time are refused
    unless `column` picks one.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path, column, timestamp_column)
    if column is not None or timestamp_column is not None:
        raise ValueError(f"{path}: --column and --timestamp-column apply to CSV files")
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
    path: str | Path | TextIO,
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
    if hasattr(path, "write"):  # an open text stream (stdout, a StringIO)
        _write_rows(path, header, columns, timestamps)
        return
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        _write_rows(fh, header, columns, timestamps)


def _write_rows(fh, header: list[str], columns: list[np.ndarray], timestamps) -> None:
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(header)
    for step in range(len(columns[0])):
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
