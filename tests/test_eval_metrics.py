"""Forecast metrics against values worked out by hand on tiny arrays."""

import math

import numpy as np
import pytest

from mmntp.eval.metrics import (
    geometric_mean,
    mase,
    seasonal_error,
    seasonal_naive,
    weighted_quantile_loss,
)

NAN = float("nan")
LEVELS_9 = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


# -- MASE -------------------------------------------------------------------------------


def test_mase_non_seasonal():
    # scale: |2-1|, |4-2|, |7-4| = 1, 2, 3 -> mean 2; errors |8-8|, |10-9| = 0, 1 -> mean 0.5
    assert mase([8, 10], [8, 9], [1, 2, 4, 7], season_length=1) == pytest.approx(0.5 / 2)


def test_mase_seasonal():
    # m = 2: |2-1|, |7-5|, |4-2|, |8-7| = 1, 2, 2, 1 -> scale 1.5; errors 1, 1 -> mean 1
    context = [1, 5, 2, 7, 4, 8]
    assert seasonal_error(context, 2) == pytest.approx(1.5)
    assert mase([5, 9], [4, 8], context, season_length=2) == pytest.approx(1 / 1.5)


def test_mase_ignores_missing_context_pairs_and_targets():
    # context pairs (1, nan) and (nan, 3) are skipped: scale |4-3| = 1
    # target step 2 is missing: only |5-7| = 2 counts, whatever the forecast says there
    assert mase([5, NAN], [7, 100], [1, NAN, 3, 4]) == pytest.approx(2.0)


def test_seasonal_scale_falls_back_to_lag_one():
    # lag 2 of 1,3,1,3,1,3 is all zeros -> lag 1: every |3-1| = 2
    assert seasonal_error([1, 3, 1, 3, 1, 3], 2) == pytest.approx(2.0)
    # a context no longer than one season uses lag 1 (GluonTS): |3-1| = 2
    assert seasonal_error([1, 3], 4) == pytest.approx(2.0)


def test_mase_errors():
    with pytest.raises(ValueError, match="constant context"):
        mase([1, 2], [1, 2], [5, 5, 5, 5], season_length=2)
    with pytest.raises(ValueError, match="too few observed values"):
        seasonal_error([1, NAN, 2, NAN], 1)  # no observed pair at any lag tried
    with pytest.raises(ValueError, match="shape"):
        mase([1, 2, 3], [1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="target is empty"):
        mase([], [], [1, 2, 3])
    with pytest.raises(ValueError, match="context is empty"):
        mase([1], [1], [])
    with pytest.raises(ValueError, match="no observed"):
        mase([NAN, NAN], [1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="forecast contains NaN"):
        mase([1, 2], [1, NAN], [1, 2, 3])
    with pytest.raises(ValueError, match="season_length"):
        mase([1], [1], [1, 2], season_length=0)


# -- WQL --------------------------------------------------------------------------------


def test_wql_by_hand():
    # pinball (y - yhat) * (q - [y < yhat]):
    #   q=0.1: (10-8)*0.1 = 0.2, (20-22)*(0.1-1) = 1.8        -> 2.0
    #   q=0.5: 0,                (20-18)*0.5 = 1.0            -> 1.0
    #   q=0.9: (10-12)*(0.9-1) = 0.2, (20-25)*(0.9-1) = 0.5  -> 0.7
    # WQL = 2 * 3.7 / (3 levels * (10 + 20)) = 7.4 / 90
    quantiles = [[8, 22], [10, 18], [12, 25]]
    assert weighted_quantile_loss([10, 20], quantiles, [0.1, 0.5, 0.9]) == pytest.approx(7.4 / 90)


def test_wql_of_a_point_forecast_is_its_wape():
    # All nine quantiles equal yhat: each step's losses sum to |e| * (0.1 + ... + 0.9 or the
    # complements) = 4.5 |e|, so WQL = 2 * 4.5 * sum|e| / (9 * sum|y|) = 5 / 60.
    point = np.array([12.0, 20.0, 27.0])
    quantiles = np.tile(point, (9, 1))
    assert weighted_quantile_loss([10, 20, 30], quantiles, LEVELS_9) == pytest.approx(5 / 60)


def test_wql_ignores_missing_targets():
    # only step 1 counts: q=0.5, (10-8)*0.5 = 1 -> 2 * 1 / (1 * 10)
    assert weighted_quantile_loss([10, NAN], [[8, 1e6]], [0.5]) == pytest.approx(0.2)


def test_wql_errors():
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        weighted_quantile_loss([1, 2], [[1, 2]], [1.0])
    with pytest.raises(ValueError, match="levels must be a non-empty"):
        weighted_quantile_loss([1, 2], np.zeros((0, 2)), [])
    with pytest.raises(ValueError, match=r"shape \(2, 2\); expected \(1, 2\)"):
        weighted_quantile_loss([1, 2], [[1, 2], [1, 2]], [0.5])
    with pytest.raises(ValueError, match="all 0"):
        weighted_quantile_loss([0, 0], [[1, 2]], [0.5])
    with pytest.raises(ValueError, match="no observed"):
        weighted_quantile_loss([NAN, NAN], [[1, 2]], [0.5])
    with pytest.raises(ValueError, match="target is empty"):
        weighted_quantile_loss([], np.zeros((1, 0)), [0.5])
    with pytest.raises(ValueError, match="quantile_forecasts contains NaN"):
        weighted_quantile_loss([1, 2], [[1, NAN]], [0.5])


# -- seasonal naive ----------------------------------------------------------------------


def test_seasonal_naive_repeats_the_last_season():
    # last season of m = 3 is 4, 5, 6; five steps cycle through it
    np.testing.assert_array_equal(seasonal_naive([1, 2, 3, 4, 5, 6], 5, 3), [4, 5, 6, 4, 5])
    np.testing.assert_array_equal(seasonal_naive([1, 2, 3], 2, 1), [3, 3])


def test_seasonal_naive_fills_missing_with_the_last_value():
    # 1, 2, 3, nan, 5, 6 -> forward fill 1, 2, 3, 3, 5, 6 -> last season 3, 5, 6
    np.testing.assert_array_equal(seasonal_naive([1, 2, 3, NAN, 5, 6], 4, 3), [3, 5, 6, 3])
    # a leading gap takes the first observed value
    np.testing.assert_array_equal(seasonal_naive([NAN, 2], 3, 2), [2, 2, 2])
    # a context shorter than a season repeats its last value
    np.testing.assert_array_equal(seasonal_naive([1, 2], 3, 4), [2, 2, 2])


def test_seasonal_naive_errors():
    with pytest.raises(ValueError, match="no observed"):
        seasonal_naive([NAN, NAN], 2, 1)
    with pytest.raises(ValueError, match="horizon"):
        seasonal_naive([1, 2], 0, 1)
    with pytest.raises(ValueError, match="context is empty"):
        seasonal_naive([], 2, 1)
    with pytest.raises(ValueError, match="1-D"):
        seasonal_naive([[1, 2]], 2, 1)


# -- geometric mean ----------------------------------------------------------------------


def test_geometric_mean():
    assert geometric_mean([1, 4]) == pytest.approx(2.0)  # sqrt(1 * 4)
    assert geometric_mean([2, 8, 4]) == pytest.approx(4.0)  # cbrt(64)
    assert geometric_mean([0.5]) == 0.5
    with pytest.raises(ValueError, match="no values"):
        geometric_mean([])
    with pytest.raises(ValueError, match="positive finite"):
        geometric_mean([1.0, 0.0])
    with pytest.raises(ValueError, match="positive finite"):
        geometric_mean([1.0, math.inf])
