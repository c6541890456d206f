"""The scheduler's contract at its edges (mutation testing, issue 29): the errors it raises
and what they carry, exact boundaries of its bounds, abort and finish bookkeeping, a
frame of tokens per sample, guided pairs' chunks, and the fair split's arithmetic. Pure
scheduler tests over ids; no times are asserted (a test clock stands still)."""

from __future__ import annotations

from collections import Counter

import pytest

from mmntp.engine.kv_cache import KVCacheManager
from mmntp.engine.plans import free_plan
from mmntp.engine.request import QueueFullError, Request, RequestStatus, shadow_of
from mmntp.engine.scheduler import LINGER_SECONDS, LINGER_STEPS, Scheduler, SchedulerConfig


def sched(blocks=256, block_size=4, clock=lambda: 0.0, **cfg) -> Scheduler:
    config = {"max_prefill_chunk": 64, "contended_rows_per_step": 0, **cfg}
    return Scheduler(SchedulerConfig(**config), KVCacheManager(blocks, block_size, False), clock)


def row(rid, owner="", prompt=3, out=50, arrival=0.0, guided=False, uncond=None, **kw):
    ids = [1 + (sum(map(ord, rid)) * 7 + i) % 50 for i in range(prompt)]
    if guided:
        kw["uncond_prompt_ids"] = [9] * (prompt if uncond is None else uncond)
    req = Request(rid, ids, free_plan(out), owner=owner, arrival_time=arrival, **kw)
    if guided:
        shadow_of(req)
    return req


def step(s: Scheduler, tokens: list[int] | None = None) -> list:
    out = s.schedule()
    one = (7, 0.0) if tokens is None else (tokens, [0.0] * len(tokens))  # a token or a frame
    sampled = {x.request.request_id: one for x in out.scheduled if x.samples}
    s.update(out, sampled)
    return out.scheduled


def ids(scheduled) -> list[str]:
    return [x.request.request_id for x in scheduled]


def owners(scheduled) -> Counter:
    return Counter(x.request.owner for x in scheduled)


# -- configuration and intake errors ------------------------------------------------------


def test_config_errors_say_positive_or_non_negative():
    with pytest.raises(ValueError, match="^max_num_seqs must be a positive integer, got 0$"):
        SchedulerConfig(max_num_seqs=0)
    with pytest.raises(
        ValueError, match="^contended_rows_per_step must be a non-negative integer, got -1$"
    ):
        SchedulerConfig(contended_rows_per_step=-1)


def test_intake_errors_name_the_request_and_the_limit():
    s = sched(max_num_seqs=1)
    s.add_request(row("r1"))
    with pytest.raises(ValueError, match="^request_id 'r1' is already in the scheduler$"):
        s.add_request(row("r1"))
    done = row("r2")
    done.status = RequestStatus.FINISHED_STOPPED
    with pytest.raises(ValueError, match=r"^request 'r2' is already finished \(stop\)$"):
        s.add_request(done)
    with pytest.raises(ValueError, match="^a guided request needs max_num_seqs >= 2, got 1$"):
        s.add_request(row("g", guided=True))


def test_a_request_that_exactly_fits_the_cache_or_the_token_bound_is_taken():
    s = sched(blocks=2, block_size=4, max_waiting_tokens=5)
    s.add_request(row("fits", prompt=5, out=3))  # 8 tokens = 2 blocks, prompt = the bound
    with pytest.raises(ValueError, match="needs 3 KV blocks, the whole cache has 2"):
        s.add_request(row("big", prompt=5, out=4))
    with pytest.raises(ValueError, match="needs 3 KV blocks"):  # a pair: 2 + 1 blocks
        sched(blocks=2, block_size=4).add_request(row("g", prompt=4, out=1, guided=True, uncond=1))
    with pytest.raises(ValueError, match="prompt of 6 tokens exceeds max_waiting_tokens 5"):
        sched(max_waiting_tokens=5).add_request(row("p", prompt=6))


def test_a_full_queue_carries_its_limit_and_what_it_held():
    s = sched(max_waiting_requests=2, max_waiting_tokens=10)
    s.add_request(row("a", prompt=3))
    s.add_request(row("b", prompt=4))
    with pytest.raises(QueueFullError) as err:
        s.add_request(row("c", prompt=1))
    e = err.value
    assert (e.limit_name, e.limit, e.current) == ("max_waiting_requests", 2, 2)
    assert str(e) == "waiting queue is full: 2 requests waiting (max_waiting_requests=2)"
    s = sched(max_waiting_tokens=10)
    s.add_request(row("a", prompt=3))
    s.add_request(row("b", prompt=4))  # 7 waiting: the count adds up over requests
    with pytest.raises(QueueFullError) as err:
        s.add_request(row("c", prompt=4))
    e = err.value
    assert (e.limit_name, e.limit, e.current) == ("max_waiting_tokens", 10, 7)
    assert str(e) == (
        "waiting queue is full: 7 prompt tokens waiting, 4 more asked (max_waiting_tokens=10)"
    )
    s.add_request(row("d", prompt=3))  # exactly 10


def test_equal_arrivals_keep_their_queueing_order_and_abort_the_right_one():
    s = sched(max_num_seqs=1)
    for rid in ("x", "y", "z"):
        s.add_request(row(rid, arrival=5.0))
        assert s.get(rid).status == RequestStatus.WAITING
    s.abort("z")
    assert s.get("y") is not None and s.get("z") is None
    order = []
    while s.has_unfinished():
        for x in step(s):
            if x.request.request_id not in order:
                order.append(x.request.request_id)
                s.abort(x.request.request_id)
    assert order == ["x", "y"]


# -- bookkeeping -------------------------------------------------------------------------


def test_abort_before_any_step_and_of_a_waiting_request_is_reported_once():
    s = sched()
    s.add_request(row("w"))
    s.abort("w")
    out = s.schedule()
    assert out.finished_request_ids == ["w"] and not s.has_unfinished()
    assert s.num_waiting == 0 and s.num_waiting_requests == 0
    with pytest.raises(ValueError, match="^status must be a finished status, got "):
        s.abort("w", RequestStatus.RUNNING)


def test_aborting_a_pair_through_its_shadow_ends_both_with_the_status_given():
    s = sched()
    g = row("g", guided=True)
    s.add_request(g)
    step(s)
    assert s.abort("g#uncond", RequestStatus.FINISHED_DEADLINE) is g
    assert g.status == g.partner.status == RequestStatus.FINISHED_DEADLINE
    assert g.finished_time is not None and not s.has_unfinished()


def test_a_group_lists_its_live_rows_until_the_last_ends():
    s = sched()
    rows = [row(f"p{i}", group="forecast") for i in range(3)]
    for r in rows:
        s.add_request(r)
    assert s.group_rows("forecast") == rows and s.group_rows("other") == []
    s.abort("p0")
    assert s.group_rows("forecast") == rows[1:]
    s.abort("p1")
    s.abort("p2")
    assert s.group_rows("forecast") == []
    assert s.num_waiting_requests == 0


def test_nothing_is_kept_of_finished_requests():
    s = sched(contended_rows_per_step=2)
    for i in range(3):
        s.add_request(row(f"a{i}", owner="a", out=3))
    s.add_request(row("b0", owner="b", out=3))
    while s.has_unfinished():
        step(s)
    assert not s._last_run and not s._requests and not s._order and not s._groups


def test_admission_marks_running_once_and_keeps_the_first_schedule_time():
    s = sched(blocks=6, block_size=4, max_num_seqs=2)
    a, b = row("a", prompt=4, out=16), row("b", prompt=4, out=16)
    s.add_request(a)
    s.add_request(b)
    step(s)
    assert a.status == b.status == RequestStatus.RUNNING
    first = b.first_scheduled_time
    assert first is not None
    preempted = []
    for _ in range(40):
        if not s.has_unfinished():
            break
        out = s.schedule()
        preempted += out.preempted
        s.update(out, {x.request.request_id: (7, 0.0) for x in out.scheduled if x.samples})
    assert "b" in preempted and b.first_scheduled_time == first  # queue time from the first
    assert b.num_preemptions == preempted.count("b") >= 1


def test_a_frame_of_tokens_is_appended_whole_and_stops_at_the_limit():
    s = sched()
    r = row("f", out=5)
    s.add_request(r)
    step(s, tokens=[5, 6, 7])
    assert r.output_ids == [5, 6, 7] and r.output_logprobs == [0.0] * 3
    step(s, tokens=[8, 9, 10])  # only 2 more fit max_tokens 5
    assert r.output_ids == [5, 6, 7, 8, 9] and r.status == RequestStatus.FINISHED_LENGTH


def test_a_request_aborted_between_schedule_and_update_does_not_stop_the_others():
    s = sched()
    for rid in ("a", "b", "c"):
        s.add_request(row(rid))
    out = s.schedule()
    s.abort("a")
    changed = s.update(out, {x.request.request_id: (7, 0.0) for x in out.scheduled})
    assert [r.request_id for r in changed] == ["b", "c"]
    assert s.get("b").output_ids == [7] == s.get("c").output_ids


def test_a_deadline_is_kept_until_it_has_passed():
    s = sched()
    s.add_request(row("d", deadline=10.0))
    assert s.expire_deadlines(10.0) == []
    assert [r.request_id for r in s.expire_deadlines(10.5)] == ["d"]


# -- guided pairs ------------------------------------------------------------------------


def test_a_pair_s_rows_share_the_budget_and_sample_together():
    s = sched(max_num_batched_tokens=8)
    g = row("g", prompt=10, out=3, guided=True, uncond=5)
    s.add_request(g)
    seen = []
    while s.has_unfinished():
        out = s.schedule()
        chunks = {x.request.request_id: (x.num_tokens, x.samples) for x in out.scheduled}
        seen.append(chunks)
        s.update(out, {rid: (7, 0.0) for rid, (_, samples) in chunks.items() if samples})
    assert seen[0] == {"g": (4, False), "g#uncond": (4, False)}  # half the budget each
    assert seen[1] == {"g": (4, False), "g#uncond": (0, False)} or seen[1] == {"g": (4, False)}
    for chunks in seen:
        samples = {rid: smp for rid, (_, smp) in chunks.items()}
        assert samples.get("g", False) == samples.get("g#uncond", False)  # together
        assert all(n <= 4 for n, _ in chunks.values())
    assert g.output_ids == g.partner.output_ids == [7, 7, 7]


def test_a_pair_waits_when_only_one_token_is_left_in_the_step():
    s = sched(max_num_batched_tokens=3, max_num_seqs=4)
    s.add_request(row("a", out=20))
    s.add_request(row("b", out=20))
    s.add_request(row("g", prompt=1, out=20, guided=True, uncond=1))
    for _ in range(6):
        scheduled = step(s)
        by = {x.request.request_id: x for x in scheduled}
        assert ("g" in by) == ("g#uncond" in by)
        assert sum(x.num_tokens for x in scheduled) <= 3


# -- the fair split ----------------------------------------------------------------------


def two_owners(rows=7, a=12, b=3, **cfg):
    s = sched(contended_rows_per_step=rows, **cfg)
    for i in range(a):
        s.add_request(row(f"a{i}", owner="a"))
    for i in range(b):
        s.add_request(row(f"b{i}", owner="b"))
    step(s)
    return s


def test_an_owner_asking_exactly_an_equal_share_gets_it_and_no_more():
    s = two_owners(rows=7, a=12, b=3)  # equal share 3: b asks 3, a gets the other 4
    for _ in range(4):
        assert owners(step(s)) == {"a": 4, "b": 3}


def test_the_odd_row_goes_to_someone_every_step():
    s = two_owners(rows=7, a=12, b=12)
    counts = [owners(step(s)) for _ in range(4)]
    assert all(sum(c.values()) == 7 for c in counts)
    assert sorted(c["a"] for c in counts) == [3, 3, 4, 4]


def test_an_owner_s_running_and_waiting_rows_both_count_in_its_demand():
    s = sched(contended_rows_per_step=6, max_num_seqs=16)
    for i in range(3):
        s.add_request(row(f"a{i}", owner="a"))
        s.add_request(row(f"b{i}", owner="b"))
    step(s)  # 3 + 3 running
    s.add_request(row("a3", owner="a"))
    assert owners(step(s)) == {"a": 3, "b": 3}


def test_decode_rows_ask_one_token_so_a_prefill_gets_the_rest():
    s = sched(contended_rows_per_step=8, contended_batched_tokens=16, max_num_seqs=16)
    s.add_request(row("a0", owner="a"))
    s.add_request(row("a1", owner="a"))
    step(s)
    s.add_request(row("b0", owner="b", prompt=20))
    tokens = Counter()
    for x in s.schedule().scheduled:
        tokens[x.request.owner] += x.num_tokens
    assert tokens == {"a": 2, "b": 14}


def test_waiting_demand_counts_only_what_the_free_slots_take():
    s = sched(contended_rows_per_step=4, max_num_seqs=5)
    for i in range(4):
        s.add_request(row(f"a{i}", owner="a"))
    step(s)
    s.add_request(row("b0", owner="b"))
    s.add_request(row("b1", owner="b"))  # one slot free: b asks one row, a keeps three
    assert owners(step(s)) == {"a": 3, "b": 1}


def test_another_owners_waiting_request_is_admitted_when_the_flood_has_no_share_left():
    s = sched(contended_rows_per_step=4, max_num_seqs=16)
    s.add_request(row("b0", owner="b"))
    step(s)  # b served first ...
    for i in range(3):
        s.add_request(row(f"a{i}", owner="a"))
    step(s)  # ... then a: a is the more recently served owner
    for i in range(3, 6):
        s.add_request(row(f"a{i}", owner="a"))
    s.add_request(row("b1", owner="b"))
    out = s.schedule()
    assert "b1" in out.new_request_ids and not {"a3", "a4", "a5"} & set(out.new_request_ids)


def test_the_linger_lasts_exactly_its_steps_and_its_seconds():
    now = [100.0]
    s = sched(contended_rows_per_step=4, clock=lambda: now[0])
    for i in range(12):
        s.add_request(row(f"a{i}", owner="a", out=200))
    step(s)
    s.add_request(row("b0", owner="b", out=1))
    step(s)  # b's last step with work
    now[0] += LINGER_SECONDS  # exactly the seconds: still lingering
    sizes = [len(step(s)) for _ in range(LINGER_STEPS + 1)]
    assert sizes == [4] * LINGER_STEPS + [4]
    now[0] += 0.001
    assert len(step(s)) == 12


# -- slots and admission order -------------------------------------------------------------


def test_the_owner_holding_the_most_rows_gives_up_its_newest_for_one_below_its_share():
    s = sched(contended_rows_per_step=4, max_num_seqs=4)
    for i in range(3):
        s.add_request(row(f"a{i}", owner="a"))
    step(s)
    s.add_request(row("z0", owner="z"))  # admitted after a's: the newest running unit
    step(s)
    s.add_request(row("z1", owner="z"))  # z holds 1 of a fair 2: a (3 rows) gives one
    out = s.schedule()
    assert out.preempted == ["a2"] and out.new_request_ids == ["z1"]
    s.add_request(row("z2", owner="z"))  # z holds its fair 2 now: nobody gives up more
    assert s.schedule().preempted == []


def test_an_owner_never_served_goes_before_one_served_once():
    s = sched(max_num_seqs=2)
    s.add_request(row("x0", owner="x", arrival=0.0))
    step(s)  # x's first admission
    s.add_request(row("y0", owner="y", arrival=2.0))
    s.add_request(row("x1", owner="x", arrival=1.0))
    assert s.schedule().new_request_ids == ["y0"]


def test_round_robin_follows_the_last_admission_not_the_arrival():
    s = sched(max_num_seqs=3)
    s.add_request(row("y0", owner="y", arrival=0.0))
    step(s)
    s.add_request(row("x0", owner="x", arrival=1.0))
    step(s)  # y served before x
    s.add_request(row("x1", owner="x", arrival=2.0))
    s.add_request(row("y1", owner="y", arrival=3.0))
    assert s.schedule().new_request_ids == ["y1"]


def test_no_slot_is_taken_for_an_owner_already_at_its_share():
    s = sched(contended_rows_per_step=5, max_num_seqs=5)
    for i in range(3):
        s.add_request(row(f"a{i}", owner="a"))
    step(s)
    for i in range(2):
        s.add_request(row(f"z{i}", owner="z"))
    step(s)  # a 3 rows, z 2 = its fair share of 5 slots (2)
    s.add_request(row("z2", owner="z"))
    out = s.schedule()
    assert out.preempted == [] and "z2" not in out.new_request_ids
