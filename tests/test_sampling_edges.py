"""model/sampling.py at its boundaries (mutation testing, issue 29): exact distributions where
the filters' comparisons meet their threshold, the inverse CDF at a bucket edge, tied
logits in a fixed order, and the single-parameter helpers at k = 0, 1, 3 and p = 1."""

import math

import pytest
import torch

from mmntp.model.sampling import (
    RowParams,
    apply_repetition_penalty,
    sample_rows,
    top_k_filter,
    top_p_filter,
)


def rows(n=1, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0):
    def full(value, dtype):
        return torch.full((n,), value, dtype=dtype)

    return RowParams(
        full(temperature, torch.float32),
        full(top_k, torch.long),
        full(top_p, torch.float32),
        full(min_p, torch.float32),
        full(1.0, torch.float32),
    )


def picks(logits, params, grid=64):
    """The ids sample_rows gives one row over a grid of uniforms in [0, 1)."""
    u = torch.arange(grid, dtype=torch.float32) / grid
    return set(sample_rows(logits.expand(grid, -1), params, u).tolist())


FOUR_EQUAL = torch.zeros(1, 4)  # probabilities 1/4 each, exact in float32


def test_top_p_drops_a_token_once_the_mass_before_it_reaches_p():
    # mass before the tokens: 0, 1/4, 1/2, 3/4; p = 1/2 is reached at the third
    assert picks(FOUR_EQUAL, rows(64, top_p=0.5)) == {0, 1}
    assert picks(FOUR_EQUAL, rows(64, top_p=0.51)) == {0, 1, 2}


def test_min_p_keeps_tokens_exactly_at_the_threshold():
    assert picks(FOUR_EQUAL, rows(64, min_p=1.0)) == {0, 1, 2, 3}  # all equal the top one
    logits = torch.tensor([[math.log(2.0), 0.0, 0.0]])  # probabilities 1/2, 1/4, 1/4
    assert picks(logits, rows(64, min_p=0.6)) == {0}


def test_inverse_cdf_bucket_edges_belong_to_the_next_token():
    params = rows(4)
    u = torch.tensor([0.0, 0.25, 0.5, 0.75])  # exactly at the cumulative 0, 1/4, 1/2, 3/4
    assert sample_rows(FOUR_EQUAL.expand(4, -1), params, u).tolist() == [0, 1, 2, 3]


def test_tied_logits_are_sampled_in_id_order_whatever_the_batch():
    vocab = 128
    logits = torch.zeros(1, vocab)
    tied = torch.arange(0, vocab, 2)  # 64 tied tokens on top, the odd ids far below
    logits[0, 1::2] = -30.0
    u = (torch.arange(64, dtype=torch.float32) + 0.5) / 64
    alone = sample_rows(logits.expand(64, -1), rows(64), u)
    assert alone.tolist() == tied.tolist()  # the k-th bucket is the k-th tied id
    other = torch.randn(3, vocab)
    batch = torch.cat([other, logits, other])
    got = sample_rows(batch, rows(7), torch.tensor([0.1, 0.2, 0.3, u[37], 0.4, 0.5, 0.6]))
    assert got[3].item() == tied[37].item()


def test_repetition_penalty_divides_every_positive_logit():
    logits = torch.tensor([[0.5, 1.5, -0.5, 0.5]])
    seen = torch.tensor([[True, True, True, False]])
    out = apply_repetition_penalty(logits, seen, torch.tensor([2.0]))
    assert out.tolist() == [[0.25, 0.75, -1.0, 0.5]]


def test_top_k_filter_helper_at_its_edges():
    x = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.7]])
    assert torch.equal(top_k_filter(x, 0), x)  # 0 = off
    assert torch.equal(top_k_filter(x, 5), x)
    kept = lambda k: torch.isfinite(top_k_filter(x, k))[0].nonzero().flatten().tolist()  # noqa: E731
    assert kept(1) == [1]
    assert kept(3) == [1, 2, 4]


def test_top_p_filter_helper_keeps_everything_at_one_and_stops_at_the_mass():
    x = torch.tensor([[0.0, -200.0]])  # the second token's probability underflows to 0
    assert torch.equal(top_p_filter(x, 1.0), x)
    kept = torch.isfinite(top_p_filter(FOUR_EQUAL, 0.5))[0]
    assert kept.sum().item() == 2


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_temperature_does_not_change_ties(temperature):
    assert picks(FOUR_EQUAL, rows(64, temperature=temperature)) == {0, 1, 2, 3}
