"""Sampling functions and the reference generation loop."""

import math

import pytest
import torch

from mmntp.api import SamplingParams
from mmntp.model.config import preset
from mmntp.model.reference import generate_reference
from mmntp.model.sampling import make_generator, sample_next, top_k_filter, top_p_filter
from mmntp.model.transformer import Transformer


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    return Transformer(preset("test", vocab_size=50)).eval()


def test_greedy_equals_recomputed_argmax(model):
    """The cached loop equals re-running the whole sequence without a cache each step."""
    prompt = [3, 9, 27, 4]
    got = generate_reference(model, prompt, 12, SamplingParams(temperature=0))
    seq = list(prompt)
    expected_lp = []
    with torch.no_grad():
        for _ in range(12):
            logits = model(torch.tensor([seq]))[0, -1]
            nxt = int(logits.argmax())
            expected_lp.append(float(logits.log_softmax(-1)[nxt]))
            seq.append(nxt)
    assert got.token_ids[0] == seq[len(prompt) :]
    assert got.logprobs[0] == pytest.approx(expected_lp, abs=1e-5)
    assert got.finish_reasons == ["length"]


def test_seed_fixes_the_sample_and_rows_differ(model):
    params = SamplingParams(temperature=1.0, seed=123)
    a = generate_reference(model, [1, 2, 3], 16, params, num_rows=4)
    b = generate_reference(model, [1, 2, 3], 16, params, num_rows=4)
    c = generate_reference(
        model, [1, 2, 3], 16, SamplingParams(temperature=1.0, seed=124), num_rows=4
    )
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids
    assert len({tuple(r) for r in a.token_ids}) > 1  # rows are independent draws


def test_allowed_mask_and_stop_ids(model):
    allowed = torch.zeros(50, dtype=torch.bool)
    allowed[10:20] = True
    out = generate_reference(model, [1, 2], 30, SamplingParams(seed=0), num_rows=3, allowed=allowed)
    assert all(10 <= t < 20 for row in out.token_ids for t in row)
    per_step = generate_reference(
        model,
        [1, 2],
        6,
        SamplingParams(seed=0),
        allowed=lambda step: allowed if step % 2 else ~allowed,
    )
    for i, tok in enumerate(per_step.token_ids[0]):
        assert (10 <= tok < 20) == bool(i % 2)
    # force the stop id by allowing only it from step 3 on
    stop = torch.zeros(50, dtype=torch.bool)
    stop[7] = True
    stopped = generate_reference(
        model,
        [1, 2],
        10,
        SamplingParams(temperature=0),
        stop_ids=[7],
        allowed=lambda step: stop if step >= 3 else None,
    )
    assert stopped.token_ids[0][-1] == 7 and len(stopped.token_ids[0]) == 4
    assert stopped.finish_reasons == ["stop"]


def test_top_k_and_top_p_filters():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    kept_k = torch.isfinite(top_k_filter(logits, 2))
    assert kept_k.tolist() == [[True, True, False, False, False]]
    kept_p = torch.isfinite(top_p_filter(logits, 0.7))  # 0.5 + 0.2 reaches 0.7
    assert kept_p.tolist() == [[True, True, False, False, False]]
    kept_p = torch.isfinite(top_p_filter(logits, 0.71))
    assert kept_p.tolist() == [[True, True, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.01)).sum() == 1  # the top token always stays
    # shuffled order: filters act on values, not positions
    perm = torch.tensor([3, 0, 4, 2, 1])
    assert torch.isfinite(top_p_filter(logits[:, perm], 0.7)).tolist() == [
        [False, True, False, False, True]
    ]


def test_sampling_follows_the_distribution():
    """Empirical frequencies of sample_next match softmax(logits / T) (chi-square bound)."""
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).expand(20000, -1)
    params = SamplingParams(temperature=0.7, seed=5)
    draws = sample_next(logits, params, make_generator(params))
    counts = torch.bincount(draws, minlength=4).double()
    expected = (logits[0] / 0.7).softmax(-1).double() * 20000
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 16.3  # p = 0.001 for 3 degrees of freedom


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -1.0}, "temperature must be >= 0"),
        ({"temperature": math.nan}, "temperature must be a finite number"),
        ({"top_k": -2}, "top_k must be an integer >= 0"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"seed": -5}, "seed must be a non-negative integer"),
        ({"guidance_scale": -0.5}, "guidance_scale must be >= 0"),
        ({"guidance_scale": math.inf}, "guidance_scale must be a finite number"),
        ({"num_steps": 0}, r"num_steps must be an integer in \[1, 1000\]"),
        ({"num_steps": 2.5}, "num_steps must be an integer"),
    ],
)
def test_sampling_params_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_loop_errors(model):
    with pytest.raises(ValueError, match="prompt is empty"):
        generate_reference(model, [], 3)
    with pytest.raises(ValueError, match="exceeds the model's max_seq_len 512"):
        generate_reference(model, list(range(10)) * 50, 20)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        generate_reference(model, [1], 0)


def test_min_p_and_repetition_penalty():
    from mmntp.model.sampling import RowParams, apply_repetition_penalty, filtered_sorted_probs

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    rows = RowParams.stack([SamplingParams(min_p=0.2)])
    probs, order = filtered_sorted_probs(logits, rows)
    kept = set(order[probs > 0].tolist())
    assert kept == {0, 1, 2}  # 0.05 < 0.2 * 0.5
    seen = torch.tensor([[True, False, False, False]])
    out = apply_repetition_penalty(torch.tensor([[2.0, 1.0, -1.0, 0.5]]), seen, torch.tensor([2.0]))
    assert out.tolist() == [[1.0, 1.0, -1.0, 0.5]]
    out = apply_repetition_penalty(torch.tensor([[-2.0, 1.0, 0.0, 0.5]]), seen, torch.tensor([2.0]))
    assert out[0, 0] == -4.0


def test_repetition_penalty_changes_greedy_output(model):
    plain = generate_reference(model, [1, 2, 3], 30, SamplingParams(temperature=0)).token_ids[0]
    penal = generate_reference(
        model, [1, 2, 3], 30, SamplingParams(temperature=0, repetition_penalty=5.0)
    ).token_ids[0]
    assert len(set(penal)) > len(set(plain))  # fewer repeats under the penalty
