"""Training data: sequence formats agree with inference, batches are deterministic, held-out
windows never reach training."""

import types

import numpy as np
import pytest
import torch

from mmntp.data import bundled_series, default_horizon, holdout_length
from mmntp.format import sequence
from mmntp.train.data import (
    IGNORE,
    TextSource,
    TimeSeriesSource,
    build_data,
    build_tokenizers,
    build_vocab,
)


@pytest.fixture(scope="module")
def vocab_toks():
    toks = build_tokenizers()
    return build_vocab(toks), toks


def _recipe(mixture, seq_len=256, batch_size=6):
    data = types.SimpleNamespace(seq_len=seq_len, batch_size=batch_size, mixture=mixture)
    return types.SimpleNamespace(seed=3, data=data)


def test_forecast_prompt_is_a_prefix_of_the_training_document(vocab_toks):
    """What the model is trained on continues exactly the prompt it is given at inference."""
    vocab, toks = vocab_toks
    series = 100 + 10 * np.sin(np.arange(80) / 3.0)
    series[5] = np.nan
    prompt, state = sequence.forecast_prompt(vocab, toks["timeseries"], series[:60])
    doc = sequence.forecast_document(vocab, toks["timeseries"], series, context_len=60)
    assert doc[: len(prompt)] == prompt
    assert doc[-2:] == [vocab.special("<end_timeseries>"), vocab.special("<eos>")]
    future = torch.tensor(doc[len(prompt) : -2]) - vocab.range("timeseries").start
    decoded = toks["timeseries"].decode(future, state).numpy()
    scale = np.nanmean(np.abs(series[:60]))
    assert np.max(np.abs(decoded - series[60:])) <= toks["timeseries"].bin_width / 2 * scale + 1e-6


def test_text_document_round_trip(vocab_toks):
    vocab, toks = vocab_toks
    ids = sequence.text_document(vocab, toks["text"], "héllo")
    assert ids[0] == vocab.special("<bos>") and ids[-1] == vocab.special("<eos>")
    local = torch.tensor(ids[1:-1]) - vocab.range("text").start
    assert toks["text"].decode(local) == "héllo"


def test_batches_are_deterministic_and_well_formed():
    mixture = [
        {"source": "timeseries", "weight": 3.0, "max_length": 200},
        {"source": "text", "weight": 1.0},
    ]
    vocab, _, source = build_data(_recipe(mixture))
    ids, targets = source.batch(7, 0, 2)
    again, again_t = source.batch(7, 0, 2)
    other, _ = source.batch(7, 1, 2)
    assert torch.equal(ids, again) and torch.equal(targets, again_t)
    assert not torch.equal(ids, other)
    assert ids.shape == targets.shape == (6, 256)
    pad = vocab.special("<pad>")
    for row_ids, row_t in zip(ids, targets):
        keep = row_t != IGNORE
        n = int(keep.sum())
        assert keep[:n].all() and not keep[n:].any()  # one document, then padding
        assert torch.equal(row_t[: n - 1], row_ids[1:n])  # next-token targets
        assert row_ids[0] == vocab.special("<bos>")
        assert (row_ids[n + 1 :] == pad).all()


def test_training_pool_excludes_held_out_windows(vocab_toks):
    vocab, toks = vocab_toks
    source = TimeSeriesSource(vocab, toks["timeseries"], kernel_synth_prob=0.0)
    series = bundled_series()
    assert len(source.sampler.pool) == len(series)
    for arr, s in zip(source.sampler.pool, series):
        cut = len(s) - holdout_length(s, default_horizon(s))
        assert len(arr) == cut
        np.testing.assert_array_equal(arr, s.values[:cut])


def test_text_source_fits_the_budget(vocab_toks):
    vocab, toks = vocab_toks
    source = TextSource(vocab, toks["text"], corpus="alpha beta\n\ngamma delta\n" * 50)
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert len(source.document(rng, 64)) <= 64


@pytest.mark.parametrize(
    ("mixture", "message"),
    [
        ([{"source": "video"}], "source must be one of"),
        ([{"source": "text", "weight": 0}], r"mixture\[0\].weight must be > 0"),
        ([{"source": "timeseries", "bogus": 1}], r"mixture\[0\] \(timeseries\)"),
        ([], "at least one source"),
    ],
)
def test_mixture_errors_name_the_entry(mixture, message):
    with pytest.raises(ValueError, match=message):
        build_data(_recipe(mixture))
