"""The top-k fast path of `filtered_sorted_probs` (`torch.topk`, then sorting only the kept
ids) equals the full-vocabulary sort bit for bit: the same probabilities over the same
ids in the same order, so every uniform picks the same token."""

import itertools

import pytest
import torch

from mmntp.api import SamplingParams
from mmntp.model import sampling
from mmntp.model.sampling import (
    RowParams,
    filtered_sorted_probs,
    leading_filtered_probs,
    sample_rows,
)

V = 97
TOP_KS = (0, 1, 2, 5, 50, V - 1, V, V + 10)
TOP_PS = (1.0, 0.9, 0.3)
TEMPERATURES = (1.0, 0.7, 1.6)


def _full_sort(monkeypatch):
    """Make `leading_filtered_probs` (so `sample_rows`) sort the whole row."""
    monkeypatch.setattr(sampling, "_top_k_order", lambda scaled, top_k: None)


def _rows(top_k: int, top_p: float, temperature: float, n: int) -> RowParams:
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=0.0)
    return RowParams.stack([params] * n)


def _both(logits, rows):
    return leading_filtered_probs(logits, rows), filtered_sorted_probs(logits, rows)


def _assert_prefix_equal(fast, full):
    """The fast result's columns are the full one's first columns; the rest are dropped."""
    (p_fast, o_fast), (p_full, o_full) = fast, full
    c = p_fast.shape[-1]
    assert torch.equal(p_fast, p_full[:, :c])
    kept = p_full[:, :c] > 0
    assert torch.equal(o_fast[kept], o_full[:, :c][kept])
    assert not bool((p_full[:, c:] > 0).any())


@pytest.mark.parametrize(
    ("top_k", "top_p", "temperature"), list(itertools.product(TOP_KS, TOP_PS, TEMPERATURES))
)
def test_the_fast_path_equals_the_full_sort(top_k, top_p, temperature, monkeypatch):
    gen = torch.Generator().manual_seed(top_k * 1000 + int(top_p * 10) + int(temperature * 7))
    logits = torch.randn(16, V, generator=gen) * 3
    rows = _rows(top_k, top_p, temperature, 16)
    fast, full = _both(logits, rows)
    _assert_prefix_equal(fast, full)
    uniforms = torch.rand(200, generator=gen)
    for u in uniforms.split(16)[:-1]:
        ids_fast = sample_rows(logits, rows, u)
        with monkeypatch.context() as m:
            _full_sort(m)
            assert torch.equal(ids_fast, sample_rows(logits, rows, u))


def test_the_fast_path_is_taken_for_a_top_k_below_the_vocabulary():
    logits = torch.randn(3, V)
    probs, order = leading_filtered_probs(logits, _rows(5, 1.0, 1.0, 3))
    assert probs.shape == order.shape == (3, 5)
    for k in (0, V, V + 1):
        probs, _ = leading_filtered_probs(logits, _rows(k, 1.0, 1.0, 3))
        assert probs.shape == (3, V)


def test_rows_with_different_top_k_each_match_the_full_sort():
    logits = torch.randn(4, V, generator=torch.Generator().manual_seed(3))
    params = [SamplingParams(temperature=1.0, top_k=k, top_p=1.0) for k in (1, 7, 50, 3)]
    rows = RowParams.stack(params)
    fast, full = _both(logits, rows)
    assert fast[0].shape[-1] == 50
    _assert_prefix_equal(fast, full)
    assert (fast[0] > 0).sum(-1).tolist() == [1, 7, 50, 3]


def test_ties_keep_the_full_sorts_id_order():
    """Logits of few distinct values: ties inside the top k come in id order, and ties
    straddling the k-th value fall back to the full sort."""
    gen = torch.Generator().manual_seed(11)
    logits = torch.randint(0, 4, (8, V), generator=gen).float()
    for k in (1, 3, 10, 40):
        rows = _rows(k, 1.0, 1.0, 8)
        _assert_prefix_equal(*_both(logits, rows))
    distinct = torch.randn(1, V, generator=gen)
    distinct[0, [4, 9, 60]] = 10.0  # three tied maxima, then distinct values
    probs, order = leading_filtered_probs(distinct, _rows(5, 1.0, 1.0, 1))
    assert order[0, :3].tolist() == [4, 9, 60]
    assert probs.shape[-1] == 5


def test_masked_rows_with_fewer_allowed_ids_than_k_match_the_full_sort():
    logits = torch.randn(2, V).masked_fill(torch.arange(V) >= 6, float("-inf"))
    _assert_prefix_equal(*_both(logits, _rows(20, 0.95, 1.0, 2)))
