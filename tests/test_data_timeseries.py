import numpy as np
import pytest

from mmntp.data.timeseries import (
    HOLDOUT_WINDOWS,
    SEASON_LENGTHS,
    Series,
    SeriesSampler,
    _sample_gp,
    augment,
    bundled_series,
    evaluation_origins,
    holdout_length,
    kernel_synth,
    seasonal_synth,
    train_part,
    ts_mixup,
)


def test_bundled_series_load_offline_with_several_frequencies():
    series = bundled_series()
    assert len(series) >= 5
    assert len({s.freq for s in series}) >= 3
    assert len({s.name for s in series}) == len(series)
    season = {"Y": 1, "Q": 4, "M": 12, "W": 52}
    for s in series:
        assert s.values.dtype == np.float64 and s.values.ndim == 1
        assert 50 <= len(s) <= 5000, s.name
        assert np.isfinite(s.values).mean() > 0.95, s.name
        assert s.season_length == season[s.freq], s.name
        # Room for the default evaluation at a seasonal horizon.
        assert len(s) - holdout_length(s, s.season_length, HOLDOUT_WINDOWS) >= 10
    assert bundled_series() is series  # cached


def test_bundled_series_known_values():
    by_name = {s.name: s for s in bundled_series()}
    assert len(by_name["sunspots"]) == 309 and by_name["sunspots"].values[0] == 5.0
    assert len(by_name["nile"]) == 100 and by_name["nile"].values[0] == 1120.0
    co2 = by_name["co2"].values
    assert np.isnan(co2).any()  # gaps are kept as NaN, not filled
    assert co2[0] == pytest.approx(316.1)
    elnino = by_name["elnino"].values
    assert len(elnino) == 61 * 12
    assert elnino[:2] == pytest.approx([23.11, 24.20])  # Jan, Feb 1950
    assert elnino[12] == pytest.approx(24.19)  # Jan 1951


def test_series_is_read_only_float64():
    s = Series("x", [1, 2, 3], "D", 7)
    assert s.values.dtype == np.float64 and len(s) == 3
    with pytest.raises(ValueError):
        s.values[0] = 5.0
    with pytest.raises(ValueError, match="1-D"):
        Series("x", np.zeros((2, 2)), "D", 7)
    with pytest.raises(ValueError, match="season_length"):
        Series("x", np.zeros(3), "D", 0)


def test_holdout_convention():
    s = Series("x", np.arange(20.0), "M", 12)
    assert holdout_length(s, horizon=4, windows=3) == 12
    origins = evaluation_origins(s, horizon=4, windows=3)
    assert origins == [8, 12, 16]
    train = train_part(s, holdout_length(s, 4, 3))
    np.testing.assert_array_equal(train, np.arange(8.0))
    # Training never reaches the first evaluation origin; the last window ends the series.
    assert len(train) == origins[0]
    assert origins[-1] + 4 == len(s)
    with pytest.raises(ValueError, match="leaves nothing to train"):
        holdout_length(s, horizon=5, windows=4)
    with pytest.raises(ValueError, match="horizon"):
        holdout_length(s, horizon=0)
    with pytest.raises(ValueError, match="holdout 20"):
        train_part(s, 20)


def test_kernel_synth_shape_finite_and_deterministic():
    for length in (1, 2, 17, 256, 1024):
        x = kernel_synth(np.random.default_rng(length), length)
        assert x.shape == (length,) and x.dtype == np.float64
        assert np.isfinite(x).all()
    a = kernel_synth(np.random.default_rng(7), 300)
    b = kernel_synth(np.random.default_rng(7), 300)
    np.testing.assert_array_equal(a, b)


def test_kernel_synth_variety():
    rng = np.random.default_rng(0)
    paths = np.stack([kernel_synth(rng, 128) for _ in range(40)])
    assert len({p.tobytes() for p in paths}) == 40
    stds = paths.std(axis=1)
    assert stds.max() > 5 * stds.min()  # different kernels give very different paths
    # Some paths are smooth (small lag-1 differences relative to their spread), some rough.
    rough = np.abs(np.diff(paths, axis=1)).mean(axis=1) / (stds + 1e-12)
    assert rough.min() < 0.1 < rough.max()


def test_sample_gp_handles_singular_and_indefinite_covariances():
    rng = np.random.default_rng(0)
    # Rank one (all ones): Cholesky needs jitter; the path is a constant level.
    x = _sample_gp(rng, np.ones((50, 50)))
    assert np.isfinite(x).all() and np.ptp(x) < 1e-2  # only jitter-sized wiggles
    # Indefinite beyond any jitter tried: the clipped eigendecomposition still gives a path.
    cov = np.array([[0.0, 1e6], [1e6, 0.0]])
    y = _sample_gp(rng, cov)
    assert y.shape == (2,) and np.isfinite(y).all()


def test_kernel_synth_rejects_bad_args():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="length"):
        kernel_synth(rng, 0)
    with pytest.raises(ValueError, match="max_kernels"):
        kernel_synth(rng, 10, max_kernels=0)


def test_ts_mixup_single_series_is_mean_scaled_window():
    x = np.arange(1.0, 101.0)
    rng = np.random.default_rng(3)
    for _ in range(20):
        y = ts_mixup(rng, [x], length=30, k_max=1)
        assert y.shape == (30,)
        assert np.abs(y).mean() == pytest.approx(1.0)
        assert np.all(np.diff(y) > 0)  # a contiguous window of an increasing series
        assert np.allclose(np.diff(y), np.diff(y)[0])


def test_ts_mixup_convex_combination_keeps_scale():
    rng = np.random.default_rng(1)
    pool = [rng.uniform(1, 10, size=200) * s for s in (1.0, 100.0, 1e4)]
    for _ in range(20):
        y = ts_mixup(rng, pool, length=64, k_max=3)
        # Positive series, each mean-scaled to 1: any convex mixture has mean exactly 1.
        assert y.mean() == pytest.approx(1.0)
        assert np.isfinite(y).all()


def test_ts_mixup_short_series_are_left_padded_with_nan():
    rng = np.random.default_rng(0)
    y = ts_mixup(rng, [np.array([2.0, 4.0, 6.0])], length=8, k_max=1)
    assert np.isnan(y[:5]).all()
    np.testing.assert_allclose(y[5:], [0.5, 1.0, 1.5])


def test_ts_mixup_nan_safe():
    rng = np.random.default_rng(0)
    a = np.array([1.0, np.nan, 3.0, np.nan, 5.0, 6.0])
    b = np.array([np.nan, np.nan, 2.0, 2.0, 2.0, 2.0])
    seen_mix = False
    for _ in range(30):
        y = ts_mixup(rng, [a, b], length=6, k_max=2)
        assert np.isnan(y[1])  # missing in every component stays missing
        assert np.isfinite(y[[2, 4, 5]]).all()
        seen_mix |= bool(np.isfinite(y[0]) and np.isfinite(y[3]))
    assert seen_mix  # steps observed by only one component take that component's value
    all_nan = ts_mixup(rng, [np.full(5, np.nan)], length=5, k_max=1)
    assert np.isnan(all_nan).all()


def test_ts_mixup_rejects_bad_args():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="pool is empty"):
        ts_mixup(rng, [], length=4)
    with pytest.raises(ValueError, match="length"):
        ts_mixup(rng, [np.ones(3)], length=0)
    with pytest.raises(ValueError, match="k_max"):
        ts_mixup(rng, [np.ones(3)], length=3, k_max=0)


def test_sampler_is_deterministic_and_mixes_sources():
    pool = [train_part(s, holdout_length(s, 8)) for s in bundled_series()]
    sampler = SeriesSampler(pool, kernel_synth_prob=0.5, lengths=(32, 64))
    draws_a = [sampler.sample(np.random.default_rng(i)) for i in range(30)]
    draws_b = [sampler.sample(np.random.default_rng(i)) for i in range(30)]
    for a, b in zip(draws_a, draws_b):
        np.testing.assert_array_equal(a, b)
    assert {len(x) for x in draws_a} == {32, 64}
    assert sampler.sample(np.random.default_rng(0), length=50).shape == (50,)


def test_sampler_probability_extremes_pick_one_source():
    pool = [np.full(10, 5.0)]
    only_mix = SeriesSampler(pool, kernel_synth_prob=0.0, lengths=(10,))
    rng = np.random.default_rng(0)
    for _ in range(10):
        np.testing.assert_allclose(only_mix.sample(rng), np.ones(10))  # mean-scaled constant
    only_ks = SeriesSampler([], kernel_synth_prob=1.0, lengths=(10,))
    x = only_ks.sample(rng)
    assert x.shape == (10,) and np.isfinite(x).all()


def test_sampler_validates_config():
    with pytest.raises(ValueError, match="kernel_synth_prob"):
        SeriesSampler([np.ones(4)], kernel_synth_prob=1.5)
    with pytest.raises(ValueError, match="pool has no series"):
        SeriesSampler([np.full(4, np.nan)], kernel_synth_prob=0.5)
    with pytest.raises(ValueError, match="lengths"):
        SeriesSampler([np.ones(4)], lengths=())


def _harmonic_peak(x: np.ndarray, period: int) -> bool:
    """Whether the periodogram's peak (a cubic trend removed, the 3 lowest bins left out)
    sits on a harmonic of ``period``."""
    t = np.arange(x.size)
    power = np.abs(np.fft.rfft(x - np.polyval(np.polyfit(t, x, 3), t))) ** 2
    power[:3] = 0.0
    cycles = int(np.argmax(power)) * period / x.size  # cycles per season
    return cycles >= 1 and abs(cycles - round(cycles)) < 1e-9


@pytest.mark.parametrize("period", [4, 7, 12, 24, 52])
def test_seasonal_synth_peaks_at_its_season(period):
    length = 12 * period
    hits = 0
    for seed in range(20):
        x, got = seasonal_synth(np.random.default_rng(seed), length, period)
        assert got == period and x.shape == (length,) and np.isfinite(x).all()
        hits += _harmonic_peak(x, period)
    assert hits >= 18, hits  # a strong trend or noise may win now and then


def test_seasonal_synth_draws_a_fitting_season_and_is_deterministic():
    periods = {seasonal_synth(np.random.default_rng(s), 64)[1] for s in range(60)}
    assert periods == {p for p in SEASON_LENGTHS if 2 * p <= 64}
    a = seasonal_synth(np.random.default_rng(3), 100)
    b = seasonal_synth(np.random.default_rng(3), 100)
    assert a[1] == b[1] and np.array_equal(a[0], b[0])
    with pytest.raises(ValueError, match="period"):
        seasonal_synth(np.random.default_rng(0), 10, period=11)
    with pytest.raises(ValueError, match="length"):
        seasonal_synth(np.random.default_rng(0), 3)


def test_augment_scales_and_shifts_but_keeps_shape_and_gaps():
    x = np.sin(np.arange(48) * 2 * np.pi / 12)
    x[5] = np.nan
    y = augment(np.random.default_rng(1), x)
    assert np.isnan(y[5]) and np.isfinite(np.delete(y, 5)).all()
    # An affine map: the standardised series is unchanged up to sign (a negative scale
    # never occurs, so exactly unchanged).
    z = lambda v: (v - np.nanmean(v)) / np.nanstd(v)  # noqa: E731
    assert np.allclose(z(y), z(x), equal_nan=True)
    scales = [np.nanstd(augment(np.random.default_rng(s), x)) for s in range(50)]
    assert min(scales) < 0.1 and max(scales) > 100  # log-uniform over 1e-2..1e3


def test_sampler_shape_options_off_keep_the_old_stream():
    pool = [np.arange(1.0, 60.0)]
    plain = SeriesSampler(pool, kernel_synth_prob=0.5, lengths=(32,))
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    for _ in range(6):
        want = kernel_synth(rng_b, 32) if rng_b.random() < 0.5 else ts_mixup(rng_b, pool, 32)
        assert np.array_equal(plain.sample(rng_a), want, equal_nan=True)


def test_sampler_seasonal_and_augment_follow_the_generator():
    sampler = SeriesSampler([], kernel_synth_prob=1.0, lengths=(48,), seasonal_prob=1.0)
    rng_a, rng_b = np.random.default_rng(4), np.random.default_rng(4)
    rng_b.random(), rng_b.random()  # the KernelSynth and the seasonal draws
    assert np.array_equal(sampler.sample(rng_a), seasonal_synth(rng_b, 48)[0])
    aug = SeriesSampler([], kernel_synth_prob=1.0, lengths=(48,), augment=True)
    a = aug.sample(np.random.default_rng(5))
    b = SeriesSampler([], kernel_synth_prob=1.0, lengths=(48,)).sample(np.random.default_rng(5))
    assert not np.allclose(a, b) and np.corrcoef(a, b)[0, 1] == pytest.approx(1.0)
    state = dict(vars(sampler))
    for _ in range(20):  # streaming: sampling keeps nothing
        sampler.sample(rng_a)
    assert vars(sampler) == state
    with pytest.raises(ValueError, match="seasonal_prob"):
        SeriesSampler([], kernel_synth_prob=1.0, seasonal_prob=2.0)
