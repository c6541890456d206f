"""The engine sampler's constrained, penalised and frame-offset paths, checked directly on
hand-made logits (mutation testing found them reached by no assertion)."""

from __future__ import annotations

import torch

from mmntp.api import SamplingParams
from mmntp.engine.plans import SegmentPlan
from mmntp.engine.request import Request
from mmntp.engine.sampler import Sampler
from mmntp.model.sampling import make_generator

V = 16


def _request(plan: SegmentPlan, *, prompt=(1, 2), output=(), **params) -> Request:
    r = Request("r", list(prompt), plan, SamplingParams(**params))
    r.output_ids = list(output)
    r.generator = make_generator(r.params)
    return r


def _logits(favourite: int, *others: int) -> torch.Tensor:
    """[1, V]: `favourite` highest, then `others` in order, the rest far below."""
    row = torch.full((1, V), -20.0)
    for rank, i in enumerate((favourite, *others)):
        row[0, i] = 10.0 - rank
    return row


def test_a_two_span_constraint_masks_everything_else():
    plan = SegmentPlan(4, cycle=(((2, 4), (8, 10)),), extra_ids=(15,))
    sampler = Sampler(V)
    ids, _ = sampler.sample(_logits(5, 9, 3), [_request(plan, temperature=0)])
    assert ids.tolist() == [9]  # 5 is outside both spans; 9 is the best allowed
    draws = set()
    for seed in range(40):
        r = _request(plan, temperature=5.0, seed=seed)
        draws.add(int(sampler.sample(torch.zeros(1, V), [r])[0][0]))
    assert draws <= {2, 3, 8, 9, 15} and len(draws) >= 4  # every allowed id, nothing else


def test_the_repetition_penalty_sees_prompt_and_output_ids():
    plan = SegmentPlan(4)
    sampler = Sampler(V)
    logits = _logits(6, 7)
    fresh = _request(plan, temperature=0, repetition_penalty=50.0)
    assert sampler.sample(logits, [fresh])[0].tolist() == [6]
    seen_in_prompt = _request(plan, prompt=(6,), temperature=0, repetition_penalty=50.0)
    assert sampler.sample(logits, [seen_in_prompt])[0].tolist() == [7]
    seen_in_output = _request(plan, output=(6,), temperature=0, repetition_penalty=50.0)
    assert sampler.sample(logits, [seen_in_output])[0].tolist() == [7]


def test_a_penalised_span_falls_back_to_the_full_path_with_the_penalty():
    plan = SegmentPlan(4, cycle=(((4, 8),),))
    sampler = Sampler(V)
    local = _logits(5, 6)[:, 4:8]  # the span's logits alone: 5 best, then 6
    plain = _request(plan, temperature=0)
    assert sampler.sample_span(local, [plain], 4)[0].tolist() == [5]
    penalised = _request(plan, output=(5,), temperature=0, repetition_penalty=50.0)
    assert sampler.sample_span(local, [penalised], 4)[0].tolist() == [6]


def test_the_offset_picks_the_constraint_of_a_later_step_in_the_frame():
    """A frame head draws a frame's tokens in one step: token j of the frame takes the
    cycle's span j (output so far + offset)."""
    plan = SegmentPlan(8, cycle=(((0, 4),), ((8, 12),)))
    sampler = Sampler(V)
    logits = _logits(1, 9)
    first = _request(plan, temperature=0)
    assert sampler.sample(logits, [first], offset=0)[0].tolist() == [1]
    assert sampler.sample(logits, [first], offset=1)[0].tolist() == [9]
    one_out = _request(plan, output=(1,), temperature=0)
    assert sampler.sample(logits, [one_out], offset=1)[0].tolist() == [1]


def test_plain_greedy_needs_greedy_no_penalty_and_no_constraint():
    free, constrained = SegmentPlan(4), SegmentPlan(4, cycle=(((0, 4),),))
    assert Sampler.is_plain_greedy([_request(free, temperature=0)])
    assert not Sampler.is_plain_greedy([_request(free, temperature=0.5)])
    assert not Sampler.is_plain_greedy([_request(free, temperature=0, repetition_penalty=2.0)])
    assert not Sampler.is_plain_greedy([_request(constrained, temperature=0)])
    both = [_request(free, temperature=0), _request(free, temperature=1.0)]
    assert not Sampler.is_plain_greedy(both)


def test_masks_are_built_once_per_constraint():
    sampler = Sampler(V)
    a = sampler.mask((((2, 4),), (9,)))
    assert a.tolist() == [i in (2, 3, 9) for i in range(V)]
    assert sampler.mask((((2, 4),), (9,))) is a
    assert sampler.mask(None).all() and sampler.mask(None).shape == (V,)


def test_one_span_with_extra_ids_keeps_the_extra_ids():
    """A text plan is one span plus <eos>: the one-span shortcut must not drop <eos>."""
    plan = SegmentPlan(4, cycle=(((4, 8),),), extra_ids=(15,))
    ids, _ = Sampler(V).sample(_logits(15, 5), [_request(plan, temperature=0)])
    assert ids.tolist() == [15]


def test_the_offset_counts_forward_through_a_three_span_frame():
    plan = SegmentPlan(9, cycle=(((0, 4),), ((4, 8),), ((8, 12),)))
    sampler = Sampler(V)
    logits = _logits(1, 5, 9)
    first = _request(plan, temperature=0)
    assert [int(sampler.sample(logits, [first], offset=k)[0][0]) for k in range(3)] == [1, 5, 9]


def test_a_penalised_span_keeps_the_frame_offset():
    plan = SegmentPlan(9, cycle=(((0, 4),), ((4, 8),), ((8, 12),)))
    sampler = Sampler(V)
    local = _logits(5, 6)[:, 4:8]  # the second codebook's span
    penalised = _request(plan, output=(5,), temperature=0, repetition_penalty=50.0)
    assert sampler.sample_span(local, [penalised], 4, offset=0)[0].tolist() == [6]
    fresh = _request(plan, prompt=(1,), temperature=0, repetition_penalty=50.0)
    # offset 1: the frame's second token, whose span is [4, 8): the penalty path keeps it
    assert sampler.sample_span(local, [fresh], 4, offset=1)[0].tolist() == [5]


def test_a_batch_mixing_free_and_constrained_rows_masks_only_the_constrained():
    sampler = Sampler(V)
    free = _request(SegmentPlan(4), temperature=0)
    constrained = _request(SegmentPlan(4, cycle=(((8, 12),),)), temperature=0)
    logits = torch.cat([_logits(3, 9), _logits(3, 9)])
    assert sampler.sample(logits, [free, constrained])[0].tolist() == [3, 9]
