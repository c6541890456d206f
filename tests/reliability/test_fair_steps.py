"""Fair steps between owners (issue 29): while two or more API keys have work, a step
computes at most `contended_rows_per_step` rows and `contended_batched_tokens` tokens,
split max-min fairly between the keys, and a flooding key's rows take turns.

Pure scheduler tests over ids: they assert which rows each step schedules, never times.
"""

from __future__ import annotations

from collections import Counter

import pytest

from mmntp.engine import EngineConfig
from mmntp.engine.kv_cache import KVCacheManager
from mmntp.engine.plans import free_plan
from mmntp.engine.request import Request, shadow_of
from mmntp.engine.scheduler import LINGER_SECONDS, LINGER_STEPS, Scheduler, SchedulerConfig


def scheduler(rows=4, tokens=64, seqs=16, blocks=256, clock=lambda: 0.0, **kw) -> Scheduler:
    cfg = SchedulerConfig(
        max_num_batched_tokens=512,
        max_num_seqs=seqs,
        max_prefill_chunk=64,
        contended_rows_per_step=rows,
        contended_batched_tokens=tokens,
        **kw,
    )
    # no prefix hits (plain counts); a clock that stands still unless a test moves it
    return Scheduler(cfg, KVCacheManager(blocks, 4, False), clock=clock)


def row(rid, owner, prompt=3, out=50, priority=0, guided=False) -> Request:
    ids = [1 + (sum(map(ord, rid)) * 7 + i) % 50 for i in range(prompt)]  # no shared prefix
    extra = {"uncond_prompt_ids": [9] * prompt} if guided else {}
    return Request(rid, ids, free_plan(out), priority=priority, owner=owner, **extra)


def step(sched: Scheduler) -> list[str]:
    """One schedule/update; the ids scheduled (prompts fit one step: all sample)."""
    out = sched.schedule()
    sampled = {s.request.request_id: (7, 0.0) for s in out.scheduled if s.samples}
    sched.update(out, sampled)
    return [s.request.request_id for s in out.scheduled]


def owners(ids: list[str]) -> Counter:
    return Counter(i.split("-")[0] for i in ids)


def test_one_owner_is_not_limited():
    sched = scheduler(rows=4)
    for i in range(12):
        sched.add_request(row(f"a-{i}", "a"))
    assert len(step(sched)) == 12  # admission: every row, as without the knob
    assert len(step(sched)) == 12  # and every step after it


def test_the_knob_off_changes_nothing_with_two_owners():
    sched = scheduler(rows=0)
    for i in range(12):
        sched.add_request(row(f"a-{i}", "a"))
    sched.add_request(row("b-0", "b"))
    assert owners(step(sched)) == {"a": 12, "b": 1}
    assert owners(step(sched)) == {"a": 12, "b": 1}


def test_two_owners_share_the_rows_and_the_small_one_gets_what_it_asks():
    sched = scheduler(rows=4)
    for i in range(12):
        sched.add_request(row(f"a-{i}", "a"))
    step(sched)  # a alone: all 12 admitted and prefilled
    sched.add_request(row("b-0", "b"))
    # b asks one row, a gets the other three: 4 rows in all.
    for _ in range(5):
        assert owners(step(sched)) == {"a": 3, "b": 1}


def test_three_owners_split_evenly_and_unused_share_goes_to_the_others():
    sched = scheduler(rows=6)
    for owner in "abc":
        for i in range(6):
            sched.add_request(row(f"{owner}-{i}", owner))
    step(sched)
    assert owners(step(sched)) == {"a": 2, "b": 2, "c": 2}
    sched = scheduler(rows=7)
    for owner in "ab":
        for i in range(6):
            sched.add_request(row(f"{owner}-{i}", owner))
    sched.add_request(row("c-0", "c"))
    step(sched)
    counts = [owners(step(sched)) for _ in range(4)]
    assert all(c["c"] == 1 and c["a"] + c["b"] == 6 and abs(c["a"] - c["b"]) <= 1 for c in counts)
    assert sum(c["a"] for c in counts) == sum(c["b"] for c in counts)  # odd row rotates


def test_a_flooding_owners_rows_take_turns_none_starves():
    sched = scheduler(rows=4)
    for i in range(12):
        sched.add_request(row(f"a-{i}", "a"))
    step(sched)
    sched.add_request(row("b-0", "b", out=100))
    seen = Counter()
    for _ in range(8):  # a's 3 rows a step over 12 rows: each runs every 4th step
        ids = step(sched)
        assert "b-0" in ids
        seen.update(i for i in ids if i.startswith("a-"))
    assert seen == {f"a-{i}": 2 for i in range(12)}


def test_the_token_budget_bounds_prefill_chunks_under_contention():
    sched = scheduler(rows=8, tokens=16)
    for i in range(4):
        sched.add_request(row(f"a-{i}", "a", prompt=100))
    assert step(sched) == [f"a-{i}" for i in range(4)]  # alone: 64-token chunks, 256 in all
    sched.add_request(row("b-0", "b", prompt=40))
    out = sched.schedule()
    per = Counter()
    for s in out.scheduled:
        per[s.request.owner] += s.num_tokens
    assert per == {"a": 8, "b": 8}  # half of the 16 tokens each


def guided_against_a_flood(rows: int) -> Scheduler:
    """Owner a runs 4 rows; owner b one guided pair (b-0 and its shadow); all admitted."""
    sched = scheduler(rows=rows)
    for i in range(4):
        sched.add_request(row(f"a-{i}", "a"))
    guided = row("b-0", "b", guided=True)
    shadow_of(guided)  # the engine makes the shadow before queueing the pair
    sched.add_request(guided)
    step(sched)
    return sched


def test_a_guided_pair_is_scheduled_with_its_shadow_or_not_at_all():
    sched = guided_against_a_flood(rows=3)
    for _ in range(6):
        ids = step(sched)
        assert ("b-0" in ids) == ("b-0#uncond" in ids)
        assert "b-0" in ids and owners(ids)["a"] >= 1  # a pair takes 2 rows, a keeps 1


def test_a_pair_moves_even_when_its_share_is_one_row():
    sched = guided_against_a_flood(rows=2)
    for _ in range(4):
        assert {"b-0", "b-0#uncond"} <= set(step(sched))


def test_a_waiting_owner_takes_a_slot_from_the_owner_holding_them_all():
    sched = scheduler(rows=4, seqs=8)
    for i in range(10):
        sched.add_request(row(f"a-{i}", "a"))
    step(sched)
    assert sched.num_running == 8
    sched.add_request(row("b-0", "b"))
    out = sched.schedule()
    assert out.preempted == ["a-7"]  # a's newest unit, queued again
    assert out.new_request_ids == ["b-0"]
    assert sched.get("a-7").status.value == "preempted"


def test_no_slot_is_taken_from_a_better_priority_level():
    sched = scheduler(rows=4, seqs=4)
    for i in range(4):
        sched.add_request(row(f"a-{i}", "a", priority=-1))
    step(sched)
    sched.add_request(row("b-0", "b", priority=0))
    out = sched.schedule()
    assert out.preempted == [] and "b-0" not in out.new_request_ids


def test_the_step_stays_contended_a_few_steps_and_seconds_after_the_other_owner_ends():
    now = [0.0]
    sched = scheduler(rows=4, clock=lambda: now[0])
    for i in range(12):
        sched.add_request(row(f"a-{i}", "a", out=200))
    step(sched)
    sched.add_request(row("b-0", "b", out=1))
    assert owners(step(sched)) == {"a": 3, "b": 1}  # b samples its one token: done
    now[0] += LINGER_SECONDS + 0.01  # slow steps: the seconds run out first
    sizes = [len(step(sched)) for _ in range(LINGER_STEPS + 2)]
    # b had work in the step above: LINGER_STEPS more steps stay contended, then a has
    # the whole step again
    assert sizes == [4] * LINGER_STEPS + [12, 12]


def test_the_linger_outlasts_its_steps_while_its_seconds_run():
    now = [0.0]
    sched = scheduler(rows=4, clock=lambda: now[0])
    for i in range(12):
        sched.add_request(row(f"a-{i}", "a", out=200))
    step(sched)
    sched.add_request(row("b-0", "b", out=1))
    step(sched)  # b done
    sizes = [len(step(sched)) for _ in range(3 * LINGER_STEPS)]  # fast steps, no time
    assert sizes == [4] * (3 * LINGER_STEPS)  # b's next request would find a small step
    now[0] += LINGER_SECONDS + 0.01
    assert len(step(sched)) == 12


def test_preemption_for_blocks_still_works_under_contention():
    # 20 blocks of 4 tokens: a's rows grow until the cache runs out.
    sched = scheduler(rows=4, blocks=20)
    for i in range(6):
        sched.add_request(row(f"a-{i}", "a", prompt=4, out=40))
    sched.add_request(row("b-0", "b", prompt=4, out=40))
    preempted = []
    for _ in range(200):
        if not sched.has_unfinished():
            break
        out = sched.schedule()
        preempted += out.preempted
        sampled = {s.request.request_id: (7, 0.0) for s in out.scheduled if s.samples}
        sched.update(out, sampled)
    assert not sched.has_unfinished() and preempted  # all finished, some recomputed
    assert set(preempted) <= {f"a-{i}" for i in range(6)} | {"b-0"}  # ids of real requests


def test_the_engine_config_carries_the_knobs():
    cfg = EngineConfig.from_dict({"contended_rows_per_step": 8, "contended_batched_tokens": 32})
    sched = cfg.scheduler_config()
    assert (sched.contended_rows_per_step, sched.contended_batched_tokens) == (8, 32)
    assert EngineConfig(contended_rows_per_step=0).scheduler_config().contended_rows_per_step == 0
    with pytest.raises(ValueError, match="contended_rows_per_step"):
        EngineConfig(contended_rows_per_step=-1)
    with pytest.raises(ValueError, match="contended_batched_tokens"):
        SchedulerConfig(contended_batched_tokens=0)


def test_admissions_count_against_the_rows_of_a_contended_step():
    sched = scheduler(rows=4, seqs=16)
    for i in range(4):
        sched.add_request(row(f"a-{i}", "a"))
    step(sched)  # a alone: its 4 rows run
    for i in range(4, 12):
        sched.add_request(row(f"a-{i}", "a"))  # a's flood keeps coming
    sched.add_request(row("b-0", "b"))
    for _ in range(6):
        assert owners(step(sched)) == {"a": 3, "b": 1}  # never a's waiting rows on top
    assert sched.num_waiting > 0  # a's newest wait for their turn in a step


def test_a_new_owner_is_admitted_before_the_flood_s_waiting_rows():
    sched = scheduler(rows=4, seqs=16)
    for i in range(3):
        sched.add_request(row(f"a-{i}", "a"))
    step(sched)
    sched.add_request(row("a-3", "a"))  # queued before b's, from an owner served long ago
    sched.add_request(row("b-0", "b"))
    out = sched.schedule()
    assert "b-0" in out.new_request_ids
    assert len(out.scheduled) <= 4


def test_an_owner_admits_no_more_rows_in_a_step_than_its_share():
    sched = scheduler(rows=4, seqs=16)
    for i in range(12):
        sched.add_request(row(f"a-{i}", "a"))
    step(sched)
    for i in range(3):
        sched.add_request(row(f"b-{i}", "b"))  # b asks 3 rows, its share is 2
    out = sched.schedule()
    assert out.new_request_ids == ["b-0", "b-1"]
    assert owners([s.request.request_id for s in out.scheduled]) == {"a": 2, "b": 2}
