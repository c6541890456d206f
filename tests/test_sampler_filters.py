"""The filters on the path the engine samples through (engine/sampler.py -> sample_rows ->
filtered_sorted_probs), checked against exact distributions worked out by hand.

The logits are log([0.4, 0.3, 0.15, 0.1, 0.05]) in a shuffled order, so every filter's
kept set and its renormalised probabilities are known in closed form.
"""

import math

import pytest
import torch

from mmntp.api import SamplingParams
from mmntp.engine import Request, free_plan
from mmntp.engine import sampler as engine_sampler
from mmntp.engine.sampler import Sampler
from mmntp.model.sampling import RowParams, filtered_sorted_probs

PROBS = [0.4, 0.3, 0.15, 0.1, 0.05]
PERM = [3, 0, 4, 1, 2]  # PROBS[r] sits at vocabulary id PERM[r]
V = len(PROBS)


def _logits() -> torch.Tensor:
    logits = torch.empty(V)
    for rank, token in enumerate(PERM):
        logits[token] = math.log(PROBS[rank])
    return logits


def _expected(kept: list[float], temperature: float = 1.0) -> torch.Tensor:
    """Distribution over vocabulary ids: the kept ranks' probabilities, renormalised."""
    weights = torch.zeros(V, dtype=torch.float64)
    for rank, p in enumerate(kept):
        weights[PERM[rank]] = p ** (1.0 / temperature)
    return weights / weights.sum()


CASES = [
    # (params, kept probabilities by rank, temperature used for the expectation)
    (SamplingParams(temperature=1.0), PROBS, 1.0),
    (SamplingParams(temperature=1.0, top_k=1), PROBS[:1], 1.0),
    (SamplingParams(temperature=1.0, top_k=2), PROBS[:2], 1.0),
    (SamplingParams(temperature=1.0, top_k=4), PROBS[:4], 1.0),
    (SamplingParams(temperature=1.0, top_k=V), PROBS, 1.0),
    # top-p: a token is dropped once the mass before it reaches p
    (SamplingParams(temperature=1.0, top_p=0.35), PROBS[:1], 1.0),
    (SamplingParams(temperature=1.0, top_p=0.5), PROBS[:2], 1.0),
    (SamplingParams(temperature=1.0, top_p=0.75), PROBS[:3], 1.0),
    (SamplingParams(temperature=1.0, top_p=0.9), PROBS[:4], 1.0),
    # min-p: keep p >= min_p * 0.4
    (SamplingParams(temperature=1.0, min_p=0.3), PROBS[:3], 1.0),
    (SamplingParams(temperature=1.0, min_p=0.2), PROBS[:4], 1.0),
    # combined: the strictest wins
    (SamplingParams(temperature=1.0, top_k=3, top_p=0.5), PROBS[:2], 1.0),
    (SamplingParams(temperature=1.0, top_k=2, top_p=0.9), PROBS[:2], 1.0),
    # temperature reshapes before the filters: at T=2 the probabilities are ∝ sqrt(p)
    (SamplingParams(temperature=2.0), PROBS, 2.0),
    (SamplingParams(temperature=2.0, top_k=3), PROBS[:3], 2.0),
]


def _ids(case) -> str:
    p = case[0]
    return f"T{p.temperature}-k{p.top_k}-p{p.top_p}-min{p.min_p}"


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_filtered_sorted_probs_exact(case):
    params, kept, temperature = case
    probs, order = filtered_sorted_probs(_logits()[None], RowParams.stack([params]))
    assert order[0].tolist() == PERM  # descending, ties none
    got = torch.zeros(V, dtype=torch.float64)
    got[order[0]] = probs[0].double()
    got = got / got.sum()
    torch.testing.assert_close(got, _expected(kept, temperature), atol=1e-6, rtol=0)


def test_rows_with_different_params_filter_independently():
    cases = CASES
    logits = _logits()[None].repeat(len(cases), 1)
    probs, order = filtered_sorted_probs(logits, RowParams.stack([c[0] for c in cases]))
    for row, (_, kept, temperature) in enumerate(cases):
        got = torch.zeros(V, dtype=torch.float64)
        got[order[row]] = probs[row].double()
        torch.testing.assert_close(got / got.sum(), _expected(kept, temperature), atol=1e-6, rtol=0)


N = 2000  # uniforms on a regular grid: inverse-CDF picks land within 1/N of each mass


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_engine_sampler_draws_the_exact_distribution(case, monkeypatch):
    """Sampler.sample (what the engine calls) fed a grid of uniforms: the share of each id
    equals the filtered distribution, so a filter dropped or off by one shows."""
    params, kept, temperature = case
    grid = (torch.arange(N, dtype=torch.float32) + 0.5) / N
    requests = [Request(f"r{i}", [1], free_plan(4), params) for i in range(N)]
    monkeypatch.setattr(engine_sampler, "_uniforms", lambda reqs, device: grid[: len(reqs)])
    sampler = Sampler(V)
    ids, logprobs = sampler.sample(_logits()[None].repeat(N, 1), requests)
    counts = torch.bincount(ids, minlength=V).double() / N
    torch.testing.assert_close(counts, _expected(kept, temperature), atol=2.0 / N, rtol=0)
    # logprobs are under the raw distribution, whatever the filters
    raw = torch.log_softmax(_logits(), -1)
    torch.testing.assert_close(logprobs, raw[ids], atol=1e-6, rtol=0)
