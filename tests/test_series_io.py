import json
import math

import numpy as np
import pytest

from mmntp.api.series_io import (
    check_context,
    read_forecast_csv,
    read_series,
    write_forecast_csv,
)


def _write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _same(a, b):
    np.testing.assert_array_equal(np.asarray(a, dtype=np.float64), np.asarray(b))


# --- CSV -------------------------------------------------------------------------------


def test_csv_one_column_without_header(tmp_path):
    values, stamps = read_series(_write(tmp_path, "a.csv", "1\n2.5\n-3e2\n"))
    _same(values, [1.0, 2.5, -300.0])
    assert values.dtype == np.float64 and stamps is None


def test_csv_one_column_with_header_bom_and_crlf(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes("\ufeffsales\r\n1\r\n2\r\n".encode())
    values, stamps = read_series(path)
    _same(values, [1.0, 2.0])
    assert stamps is None


def test_csv_missing_markers_become_nan(tmp_path):
    text = "value\n1\n\nNA\nnan\nnull\n NaN \nn/a\n2\n\n\n"  # trailing blank lines ignored
    values, _ = read_series(_write(tmp_path, "a.csv", text))
    assert values.shape == (8,)
    assert values[0] == 1.0 and values[-1] == 2.0
    assert np.isnan(values[1:-1]).all()


def test_csv_timestamp_value_with_and_without_header(tmp_path):
    body = "2024-01-01,10\n2024-01-02,\n2024-01-03,12.5\n"
    for text in ("timestamp,value\n" + body, body):
        values, stamps = read_series(_write(tmp_path, "a.csv", text))
        _same(values, [10.0, np.nan, 12.5])
        assert stamps == ["2024-01-01", "2024-01-02", "2024-01-03"]


def test_csv_quoted_timestamps(tmp_path):
    values, stamps = read_series(_write(tmp_path, "a.csv", '"Jan 1, 2024",3\n"Jan 2, 2024",4\n'))
    _same(values, [3.0, 4.0])
    assert stamps == ["Jan 1, 2024", "Jan 2, 2024"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("\n\n  \n", "empty file"),
        ("value\n", "header but no values"),
        ("1\n2\n3\n4\n5\n6\nabc\n", r"line 7: 'abc' is not a number"),
        ("t,v\n2024,1\n2025,x1\n", r"line 3: 'x1' is not a number"),
        ("1\ninf\n", r"line 2: 'inf' is infinite"),
        ("1\n-Infinity\n", r"line 2: '-Infinity' is infinite"),
        ("NA\n\nnan\n", "all 3 values are missing"),
        ("a,b,c\n1,2,3\n", "line 1 has 3 columns; expected 1 \\(value\\) or 2"),
        ("t,v\n2024,1\n2025\n", "line 3 has 1 columns but line 1 has 2"),
        ("1\n2,3\n", "line 2 has 2 columns but line 1 has 1"),
        ("t,v\n2024,1\n\n2026,3\n", "line 3 has 1 columns but line 1 has 2"),
        ("t,v\n2024,1\n,2\n", "line 3: empty timestamp"),
    ],
)
def test_csv_errors(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        read_series(_write(tmp_path, "bad.csv", text))


# --- JSON ------------------------------------------------------------------------------


def test_json_list_with_nulls(tmp_path):
    values, stamps = read_series(_write(tmp_path, "a.json", "[1, null, 2.5, -4]"))
    _same(values, [1.0, np.nan, 2.5, -4.0])
    assert stamps is None


def test_json_object_with_and_without_timestamps(tmp_path):
    doc = {"values": [1, 2, None], "timestamps": ["a", "b", "c"]}
    values, stamps = read_series(_write(tmp_path, "a.json", json.dumps(doc)))
    _same(values, [1.0, 2.0, np.nan])
    assert stamps == ["a", "b", "c"]
    values, stamps = read_series(_write(tmp_path, "b.JSON", '{"values": [3, 4]}'))
    _same(values, [3.0, 4.0])
    assert stamps is None


def test_json_nan_literal_is_missing(tmp_path):
    values, _ = read_series(_write(tmp_path, "a.json", "[1, NaN]"))
    assert values[0] == 1.0 and math.isnan(values[1])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("[1, 2", "not valid JSON: .* \\(line 1, column 6\\)"),
        ("[]", "no values"),
        ("[null, null]", "all 2 values are missing"),
        ('[1, "abc"]', "item 1: 'abc' is not a number"),
        ("[1, true]", "item 1: True is not a number"),
        ("[1, [2, 3]]", "item 1: \\[2, 3\\] is not a number"),
        ("[1, Infinity]", "item 1: inf is infinite"),
        ("5", "expected a list of numbers, got int"),
        ('{"value": [1]}', "unexpected keys \\['value'\\]"),
        ('{"timestamps": ["a"]}', "object has no 'values' list"),
        ('{"values": [1, 2], "timestamps": ["a"]}', "1 timestamps but 2 values"),
        ('{"values": [1], "timestamps": [1]}', "'timestamps' must be a list of strings"),
    ],
)
def test_json_errors(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        read_series(_write(tmp_path, "bad.json", text))


def test_unknown_extension(tmp_path):
    with pytest.raises(ValueError, match="unknown extension '.xlsx'; expected .csv or .json"):
        read_series(_write(tmp_path, "a.xlsx", "1\n"))
    with pytest.raises(ValueError, match="unknown extension ''"):
        read_series(_write(tmp_path, "noext", "1\n"))


# --- context check ---------------------------------------------------------------------


def test_check_context_counts_observed_values():
    check_context(np.array([1.0, np.nan, 2.0]), 2)
    with pytest.raises(ValueError, match="^context has 2 observed values; at least 3 are needed$"):
        check_context(np.array([1.0, np.nan, 2.0]), 3)


# --- forecast CSV ----------------------------------------------------------------------


def test_forecast_round_trip_without_timestamps(tmp_path):
    path = tmp_path / "f.csv"
    median = np.array([1.0, 2.0 / 3.0, -1e-300])
    quantiles = {0.9: median + 1, 0.1: median - 1, 0.5: median}  # any order in, ascending out
    write_forecast_csv(path, median, quantiles)
    lines = path.read_text().splitlines()
    assert lines[0] == "median,q0.1,q0.5,q0.9"
    assert len(lines) == 4
    table = read_forecast_csv(path)
    _same(table.median, median)  # shortest round-trip repr is exact
    assert list(table.quantiles) == [0.1, 0.5, 0.9]
    for level, q in quantiles.items():
        _same(table.quantiles[level], q)
    assert table.timestamps is None


def test_forecast_round_trip_with_timestamps_and_nan(tmp_path):
    path = tmp_path / "f.csv"
    median = np.array([1.5, np.nan])
    write_forecast_csv(path, median, {0.05: median - 1}, timestamps=["2024-01", "2024-02"])
    assert path.read_text().splitlines()[0] == "timestamp,median,q0.05"
    table = read_forecast_csv(path)
    assert table.timestamps == ["2024-01", "2024-02"]
    _same(table.median, median)
    _same(table.quantiles[0.05], median - 1)


def test_forecast_write_errors(tmp_path):
    path = tmp_path / "f.csv"
    with pytest.raises(ValueError, match="median must be 1-D"):
        write_forecast_csv(path, np.zeros((2, 2)), {})
    with pytest.raises(ValueError, match="quantile 0.1 has shape \\(3,\\); expected \\(2,\\)"):
        write_forecast_csv(path, np.zeros(2), {0.1: np.zeros(3)})
    with pytest.raises(ValueError, match="quantile level must be in \\(0, 1\\), got 1.5"):
        write_forecast_csv(path, np.zeros(2), {1.5: np.zeros(2)})
    with pytest.raises(ValueError, match="1 timestamps for a horizon of 2"):
        write_forecast_csv(path, np.zeros(2), {}, timestamps=["a"])


def test_forecast_read_errors(tmp_path):
    with pytest.raises(ValueError, match="empty file"):
        read_forecast_csv(_write(tmp_path, "e.csv", ""))
    with pytest.raises(ValueError, match="is not \\[timestamp,\\]median"):
        read_forecast_csv(_write(tmp_path, "h.csv", "mean,q0.1\n1,2\n"))
    with pytest.raises(ValueError, match="line 3 has 1 columns; header has 2"):
        read_forecast_csv(_write(tmp_path, "r.csv", "median,q0.1\n1,2\n3\n"))
