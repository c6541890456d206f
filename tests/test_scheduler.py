"""Scheduler: budgets, chunked prefill, priority, queue bounds, preemption, abort, deadlines.

The runner is simulated: a sampled token is a deterministic function of the request's
tokens so far, so a preempted request recomputes to the very same output.
"""

import math

import pytest

from mmntp.engine.kv_cache import KVCacheManager
from mmntp.engine.plans import free_plan
from mmntp.engine.request import QueueFullError, Request, RequestStatus
from mmntp.engine.scheduler import Scheduler, SchedulerConfig


def make(rid, prompt_len, max_tokens=4, priority=0, arrival=None, base=0, **kw):
    extra = {} if arrival is None else {"arrival_time": arrival}
    ids = [(base + 7 * i) % 997 for i in range(prompt_len)]
    return Request(rid, ids, free_plan(max_tokens), priority=priority, **extra, **kw)


def fake_token(req):
    return (sum(req.all_token_ids) * 31 + req.num_tokens) % 1000 + 1


def step(sched, check=None):
    out = sched.schedule()
    cfg = sched.config
    assert out.num_batched_tokens == sum(s.num_tokens for s in out.scheduled)
    assert out.num_batched_tokens <= cfg.max_num_batched_tokens
    assert all(1 <= s.num_tokens <= cfg.max_prefill_chunk for s in out.scheduled)
    assert sched.num_running <= cfg.max_num_seqs
    for s in out.scheduled:
        assert s.start == s.request.num_computed_tokens
        assert len(s.block_table) * sched.kv.block_size >= s.start + s.num_tokens
        assert s.samples == (s.start + s.num_tokens == s.request.num_tokens)
    if check:
        check(out)
    sampled = {
        s.request.request_id: (fake_token(s.request), -0.5) for s in out.scheduled if s.samples
    }
    sched.update(out, sampled)
    return out


def run(sched, max_steps=10_000, check=None):
    steps = 0
    while sched.has_unfinished():
        step(sched, check)
        steps += 1
        assert steps < max_steps
    return steps


def new(num_blocks=64, block_size=4, prefix=True, **cfg):
    return Scheduler(SchedulerConfig(**cfg), KVCacheManager(num_blocks, block_size, prefix))


def reference_output(prompt_len, max_tokens, base=0):
    sched = new(num_blocks=256)
    req = make("ref", prompt_len, max_tokens, base=base)
    sched.add_request(req)
    run(sched)
    return req.output_ids


def test_config_validation():
    with pytest.raises(ValueError, match="max_num_seqs"):
        SchedulerConfig(max_num_seqs=0)
    with pytest.raises(ValueError, match="max_prefill_chunk"):
        SchedulerConfig(max_prefill_chunk=2.5)


def test_budget_respected_with_decodes_and_prefill_chunks():
    sched = new(num_blocks=256, max_num_batched_tokens=32, max_prefill_chunk=16)
    reqs = [make(f"long{i}", 50, 6, base=i) for i in range(3)]
    reqs += [make(f"short{i}", 3, 10, base=100 + i) for i in range(4)]
    for r in reqs:
        sched.add_request(r)
    mixed = []
    run(sched, check=lambda out: mixed.append({s.num_tokens > 1 for s in out.scheduled}))
    assert {True, False} in mixed  # some step had both a decode and a prefill chunk
    for r in reqs:
        assert r.status is RequestStatus.FINISHED_LENGTH
        assert len(r.output_ids) == r.plan.max_tokens
        assert r.num_computed_tokens == r.num_tokens - 1  # the last token is never fed
    assert sched.kv.usage == 0.0


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_chunked_prefill_keeps_decodes_going(chunk):
    sched = new(num_blocks=128, max_num_batched_tokens=chunk + 2, max_prefill_chunk=chunk)
    decodes = [make(f"d{i}", 3, 300, base=i) for i in range(2)]
    for r in decodes:
        sched.add_request(r)
    while not all(r.output_ids for r in decodes):
        step(sched)
    long = make("long", 100, 2, base=500)
    sched.add_request(long)
    steps = 0
    while not long.output_ids:
        before = [len(r.output_ids) for r in decodes]
        out = step(sched)
        steps += 1
        by_id = {s.request.request_id: s for s in out.scheduled}
        assert by_id["long"].num_tokens == min(chunk, 100 - by_id["long"].start)
        assert [len(r.output_ids) for r in decodes] == [b + 1 for b in before]
    assert steps == math.ceil(100 / chunk)


def test_long_prompt_never_takes_the_budget_from_decodes():
    sched = new(num_blocks=128, max_num_batched_tokens=8, max_prefill_chunk=64)
    decodes = [make(f"d{i}", 2, 100, base=i) for i in range(3)]
    for r in decodes:
        sched.add_request(r)
    step(sched)
    sched.add_request(make("long", 40, 1))
    for _ in range(5):
        out = step(sched)
        sizes = {s.request.request_id: s.num_tokens for s in out.scheduled}
        assert [sizes[f"d{i}"] for i in range(3)] == [1, 1, 1]
        assert sizes["long"] == 5


def test_priority_then_arrival_order():
    sched = new(max_num_seqs=1)
    for rid, prio, arrival in (("a", 1, 0.0), ("b", 0, 2.0), ("c", 0, 1.0), ("d", 1, -1.0)):
        sched.add_request(make(rid, 3, 1, priority=prio, arrival=arrival))
    order = []
    run(sched, check=lambda out: order.extend(out.new_request_ids))
    assert order == ["c", "b", "d", "a"]


def test_queue_bounds_and_too_large_requests():
    sched = new(num_blocks=8, block_size=4, max_waiting_requests=2, max_waiting_tokens=10)
    sched.add_request(make("a", 4))
    sched.add_request(make("b", 3))
    with pytest.raises(QueueFullError):
        sched.add_request(make("c", 1))  # by requests
    step(sched)  # admits both
    sched.add_request(make("c", 6))
    with pytest.raises(QueueFullError):
        sched.add_request(make("d", 5))  # 6 + 5 > 10 tokens
    sched.add_request(make("d", 4))
    with pytest.raises(ValueError, match="max_total_tokens"):
        sched.add_request(make("huge", 5, 100))  # 105 tokens, cache holds 32
    with pytest.raises(ValueError, match="max_waiting_tokens"):
        sched.add_request(make("wide", 11, 1))
    with pytest.raises(ValueError, match="already"):
        sched.add_request(make("a", 4))
    assert sched.num_waiting == 2 and sched.num_running == 2


def test_preemption_recomputes_the_worst_request():
    # 6 blocks of 4: two requests of 4 + 12 tokens need 8 blocks at the end.
    sched = new(num_blocks=6, block_size=4)
    good = make("good", 4, 12, priority=0, base=1)
    bad = make("bad", 4, 12, priority=1, base=2)
    sched.add_request(bad)
    sched.add_request(good)
    preempted = []

    def check(out):
        preempted.extend(out.preempted)
        if out.preempted:
            assert sched.kv.num_blocks_of("bad") == 0
            assert bad.status is RequestStatus.PREEMPTED and bad.num_computed_tokens == 0
            assert not out.new_request_ids  # nothing admitted in a step that preempted

    run(sched, check=check)
    assert preempted and set(preempted) == {"bad"}
    assert bad.num_preemptions == len(preempted) and good.num_preemptions == 0
    assert good.output_ids == reference_output(4, 12, base=1)
    assert bad.output_ids == reference_output(4, 12, base=2)
    assert sched.kv.usage == 0.0


def test_preemption_victim_is_the_latest_of_equal_priority():
    sched = new(num_blocks=6, block_size=4, prefix=False)
    reqs = [make(f"r{i}", 4, 8, arrival=float(i), base=10 * i) for i in range(3)]
    for r in reqs:
        sched.add_request(r)
    out = step(sched)  # 3 blocks in use
    while not out.preempted:
        out = step(sched)
    assert out.preempted == ["r2"]
    assert [s.request.request_id for s in out.scheduled] == ["r0", "r1"]
    run(sched)
    for i, r in enumerate(reqs):
        assert len(r.output_ids) == 8
        assert r.output_ids == reference_output(4, 8, base=10 * i)


def test_failing_worst_request_preempts_itself():
    sched = new(num_blocks=3, block_size=4)
    good = make("good", 4, 4, priority=0, base=1)
    bad = make("bad", 4, 4, priority=1, base=2)
    sched.add_request(good)
    sched.add_request(bad)
    step(sched)  # both prompts fill one block each; one block left
    out = step(sched)  # both need a second block: good takes it, bad preempts itself
    assert out.preempted == ["bad"]
    assert [s.request.request_id for s in out.scheduled] == ["good"]
    assert bad.status is RequestStatus.PREEMPTED and sched.kv.num_blocks_of("bad") == 0
    assert sched.num_waiting == 1 and sched.num_running == 1
    run(sched)
    assert good.output_ids == reference_output(4, 4, base=1)
    assert bad.output_ids == reference_output(4, 4, base=2)


def test_abort_frees_every_block():
    sched = new(num_blocks=16, block_size=4, max_num_seqs=2)
    before = sched.kv.usage
    reqs = [make(f"r{i}", 6, 20, base=i) for i in range(4)]
    for r in reqs:
        sched.add_request(r)
    for _ in range(3):
        step(sched)
    assert sched.num_running == 2 and sched.num_waiting == 2 and sched.kv.usage > before
    out = sched.schedule()
    assert sched.abort("r0") is reqs[0]  # between schedule and update
    sched.update(out, {s.request.request_id: (1, 0.0) for s in out.scheduled})
    for r in reqs[1:]:
        assert sched.abort(r.request_id) is r
        assert r.status is RequestStatus.FINISHED_ABORTED
    assert sched.kv.usage == before and sched.kv.num_free_blocks == 16
    assert sched.abort("r0") is None and sched.abort("nope") is None
    assert not sched.has_unfinished() and sched.get("r1") is None
    assert set(sched.schedule().finished_request_ids) == {"r0", "r1", "r2", "r3"}


def test_deadlines_expire():
    sched = new(max_num_seqs=1)
    running = make("running", 3, 50, deadline=100.0)
    waiting = make("waiting", 3, 50, deadline=150.0)
    keep = make("keep", 3, 50, deadline=1e12)
    for r in (running, waiting, keep):
        sched.add_request(r)
    step(sched)
    assert sched.expire_deadlines(50.0) == []
    expired = sched.expire_deadlines(200.0)
    assert {r.request_id for r in expired} == {"running", "waiting"}
    assert all(r.status is RequestStatus.FINISHED_DEADLINE for r in expired)
    assert sched.num_running == 0 and sched.num_waiting == 1
    assert sched.kv.usage == 0.0


def test_fully_cached_prompt_still_computes_its_last_token():
    sched = new(num_blocks=32, block_size=16)
    first = make("first", 32, 1)
    sched.add_request(first)
    run(sched)
    again = make("again", 32, 1)
    sched.add_request(again)
    out = step(sched)
    (s,) = out.scheduled
    assert (s.start, s.num_tokens, s.samples) == (16, 16, True)
    assert again.output_ids == first.output_ids
    assert sched.kv.prefix_cache_hit_rate == pytest.approx(16 / 64)


def test_max_num_seqs_respected():
    sched = new(num_blocks=128, max_num_seqs=3)
    reqs = [make(f"r{i}", 5, 4, base=i) for i in range(10)]
    for r in reqs:
        sched.add_request(r)
    run(sched, check=lambda out: len(out.scheduled) <= 3)
    assert all(len(r.output_ids) == 4 for r in reqs)


def test_stop_and_length_finish_and_free():
    sched = Scheduler(SchedulerConfig(), KVCacheManager(16, 4))
    stopper = Request("s", [1, 2, 3], free_plan(10, stop_ids=[0]))
    sched.add_request(stopper)
    out = sched.schedule()
    assert sched.update(out, {"s": (5, -1.0)}) == [stopper]
    out = sched.schedule()
    assert sched.update(out, {"s": (0, -0.1)}) == [stopper]
    assert stopper.status is RequestStatus.FINISHED_STOPPED
    assert stopper.output_ids == [5, 0] and stopper.output_logprobs == [-1.0, -0.1]
    assert sched.kv.usage == 0.0 and not sched.has_unfinished()
    assert sched.schedule().finished_request_ids == ["s"]

    sched.add_request(make("x", 2, 1))
    out = sched.schedule()
    with pytest.raises(ValueError, match="no token"):
        sched.update(out, {})
