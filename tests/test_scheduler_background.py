"""Background work (batch jobs, priority >= BACKGROUND_PRIORITY) only fills idle steps.

The runner is simulated as in test_scheduler.py: a sampled token is a function of the
tokens so far, so a background request that was preempted recomputes to the same output.
"""

import pytest
from test_scheduler import make, new, reference_output, run, step

from mmntp.engine.request import BACKGROUND_PRIORITY

BG = BACKGROUND_PRIORITY


def scheduled_ids(out):
    return {s.request.request_id for s in out.scheduled}


def test_background_alone_runs_and_matches_the_reference():
    sched = new()
    batch = [make(f"b{i}", 6, 5, priority=BG, base=i, owner="batch:x") for i in range(3)]
    for r in batch:
        sched.add_request(r)
    out = step(sched)
    assert scheduled_ids(out) == {"b0", "b1", "b2"}  # idle capacity: all of them at once
    run(sched)
    assert [r.output_ids for r in batch] == [reference_output(6, 5, base=i) for i in range(3)]


def test_interactive_request_preempts_running_background_rows():
    sched = new()
    batch = [make(f"b{i}", 6, 8, priority=BG, base=i, owner="batch:x") for i in range(2)]
    for r in batch:
        sched.add_request(r)
    step(sched)
    step(sched)
    assert {r.request_id for r in batch} == {"b0", "b1"} and sched.num_running == 2
    sched.add_request(make("live", 5, 3, base=50, owner="k-a"))
    out = step(sched)
    # The very next step computes the interactive request alone; the batch rows gave
    # their slots and blocks back.
    assert scheduled_ids(out) == {"live"}
    assert set(out.preempted) == {"b0", "b1"}
    assert sched.num_running == 1
    while sched.get("live") is not None:
        out = step(sched)
        assert not scheduled_ids(out) & {"b0", "b1"}
    run(sched)  # then the batch resumes and recomputes to the very same outputs
    assert [r.output_ids for r in batch] == [reference_output(6, 8, base=i) for i in range(2)]
    assert all(r.num_preemptions == 1 for r in batch)


def test_waiting_background_rows_wait_while_interactive_work_runs():
    sched = new(max_num_batched_tokens=64)
    live = make("live", 4, 6, base=3, owner="k-a")
    sched.add_request(live)
    batch = [make(f"b{i}", 4, 2, priority=BG, base=i, owner="batch:x") for i in range(4)]
    for r in batch:
        sched.add_request(r)  # queued behind: plenty of budget left for them, yet held
    order = []
    while sched.has_unfinished():
        out = step(sched)
        order.append(scheduled_ids(out))
        if sched.get("live") is not None or "live" in scheduled_ids(out):
            assert scheduled_ids(out) <= {"live"}
    first_batch = next(i for i, ids in enumerate(order) if ids & {"b0", "b1", "b2", "b3"})
    last_live = max(i for i, ids in enumerate(order) if "live" in ids)
    assert first_batch > last_live
    assert sched.num_waiting == 0 and sched.num_running == 0


def test_hidden_background_owner_does_not_make_the_step_contended():
    # Fair steps cap a step at contended_batched_tokens while two owners have work; a
    # held batch is not work this step, so the interactive prompt prefills at full size.
    sched = new(num_blocks=256, contended_batched_tokens=16, max_prefill_chunk=128)
    sched.add_request(make("b0", 8, 30, priority=BG, owner="batch:x"))
    step(sched)
    sched.add_request(make("live", 100, 2, base=9, owner="k-a"))
    out = step(sched)
    assert [(s.request.request_id, s.num_tokens) for s in out.scheduled] == [("live", 100)]


def test_background_queue_bounds_still_apply():
    sched = new(max_waiting_requests=2)
    sched.add_request(make("b0", 4, priority=BG, owner="batch:x"))
    sched.add_request(make("live", 4, owner="k-a"))
    step(sched)  # b0 hidden during the step, then back in its queue
    assert sched.num_waiting == 1 and sched.num_waiting_requests == 1
    assert sched.get("b0") is not None


def test_background_steps_compute_at_most_the_cap_and_take_turns():
    sched = new(num_blocks=256, background_rows_per_step=4)
    batch = [make(f"b{i}", 6, 5, priority=BG, base=i, owner="batch:x") for i in range(10)]
    for r in batch:
        sched.add_request(r)
    seen = set()
    while sched.has_unfinished():
        out = step(sched)
        assert len(out.scheduled) <= 4
        seen |= scheduled_ids(out)
    assert seen == {r.request_id for r in batch}  # none starved
    assert [r.output_ids for r in batch] == [reference_output(6, 5, base=i) for i in range(10)]


def test_the_cap_lets_running_units_take_turns_keeping_their_cache():
    sched = new(num_blocks=256, background_rows_per_step=2, max_num_batched_tokens=64)
    batch = [make(f"b{i}", 6, 8, priority=BG, base=i, owner="batch:x") for i in range(2)]
    for r in batch:
        sched.add_request(r)
    step(sched)  # both admitted (the cap's room)
    for extra in ("b2", "b3"):
        sched.add_request(make(extra, 6, 8, priority=BG, base=int(extra[1]), owner="batch:x"))
    rounds = [scheduled_ids(step(sched)) for _ in range(4)]
    assert all(len(ids) <= 2 for ids in rounds)
    assert sched.num_running == 2 and sched.num_waiting == 2  # no admission while at the cap
    assert all(r.num_preemptions == 0 for r in batch)  # parked rows keep their KV


def test_cap_zero_is_off():
    sched = new(num_blocks=256, background_rows_per_step=0, background_batched_tokens=0)
    for i in range(10):
        sched.add_request(make(f"b{i}", 6, 5, priority=BG, base=i, owner="batch:x"))
    assert len(step(sched).scheduled) == 10


def test_the_cap_is_an_engine_setting():
    from mmntp.engine import EngineConfig

    assert EngineConfig(background_rows_per_step=2).scheduler_config().background_rows_per_step == 2
    with pytest.raises(ValueError, match="engine.background_rows_per_step must be 0"):
        EngineConfig(background_rows_per_step=-1)


def test_background_steps_compute_at_most_the_token_budget():
    sched = new(num_blocks=256, background_batched_tokens=16)
    batch = [make(f"b{i}", 40, 3, priority=BG, base=i, owner="batch:x") for i in range(2)]
    for r in batch:
        sched.add_request(r)
    steps = []
    while sched.has_unfinished():
        out = step(sched)
        steps.append(out.num_batched_tokens)
    assert max(steps) <= 16  # 40-token prompts prefilled in chunks, not one long step
    assert sum(steps) >= 2 * 40 and len(steps) >= 5
    assert [r.output_ids for r in batch] == [reference_output(40, 3, base=i) for i in range(2)]


def test_the_token_budget_leaves_interactive_steps_alone():
    sched = new(num_blocks=256, background_batched_tokens=16)
    sched.add_request(make("b0", 40, 8, priority=BG, owner="batch:x"))
    step(sched)
    sched.add_request(make("live", 100, 2, base=50, owner="k-a"))
    out = step(sched)  # the batch yields and the interactive prompt goes in whole
    assert scheduled_ids(out) == {"live"} and out.num_batched_tokens == 100


def test_token_budget_zero_is_off():
    sched = new(num_blocks=256, background_batched_tokens=0)
    sched.add_request(make("b0", 100, 2, priority=BG, owner="batch:x"))
    assert step(sched).num_batched_tokens == 100


def test_the_token_budget_is_an_engine_setting():
    from mmntp.engine import EngineConfig

    config = EngineConfig(background_batched_tokens=8).scheduler_config()
    assert config.background_batched_tokens == 8
    with pytest.raises(ValueError, match="engine.background_batched_tokens must be 0"):
        EngineConfig(background_batched_tokens=-1)
