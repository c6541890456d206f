"""KVCacheManager's contract at its edges (mutation testing, issue 29): argument checks that
name the argument, hit-rate accounting over several lookups, unknown and reused request
ids, a reused block registered for its new content, and where extents are placed."""

import pytest

from mmntp.engine.kv_cache import KVCacheManager, num_blocks_for_budget
from mmntp.engine.plans import free_plan
from mmntp.engine.request import Request

SIZES = ("block_size", "n_layers", "n_kv_heads", "head_dim", "dtype_bytes")


def make(rid, ids, max_tokens=8):
    return Request(rid, list(ids), free_plan(max_tokens))


def computed(kv, req):
    assert kv.allocate_slots(req, req.num_tokens)
    kv.cache_blocks(req, req.num_tokens)


@pytest.mark.parametrize("name", SIZES)
def test_each_size_argument_is_named_and_one_is_allowed(name):
    sizes = dict.fromkeys(SIZES, 1)  # one block: K and V of one layer = 2 bytes
    assert num_blocks_for_budget(2, **sizes) == 1
    for bad in (0, 1.0):
        with pytest.raises(ValueError, match=f"^{name} must be a positive integer"):
            num_blocks_for_budget(2, **{**sizes, name: bad})


def test_manager_sizes_are_checked_and_one_block_is_enough():
    for bad in (0, -1, 2.0):
        with pytest.raises(ValueError, match="^num_blocks must be a positive integer"):
            KVCacheManager(bad, 4)
    kv = KVCacheManager(1, 1)
    assert kv.allocate_slots(make("a", [1], max_tokens=1), 1)
    assert kv.block_table("a") == [0] and kv.num_free_blocks == 0


def test_hit_rate_accumulates_over_lookups_and_resets_to_zero():
    kv = KVCacheManager(16, 4)
    computed(kv, make("a", range(9)))
    assert kv.get_computed_blocks(make("b", range(9))) == 8
    assert kv.get_computed_blocks(make("c", range(5))) == 4
    assert kv.prefix_cache_hit_rate == pytest.approx((0 + 8 + 4) / (9 + 5))
    kv.reset_prefix_cache_stats()
    assert kv.prefix_cache_hit_rate == 0.0
    assert kv.get_computed_blocks(make("d", range(9))) == 8
    assert kv.prefix_cache_hit_rate == pytest.approx(8 / 9)  # counted from zero again


def test_a_request_without_blocks_has_an_empty_table_and_nothing_to_cache():
    kv = KVCacheManager(4, 2)
    ghost = make("ghost", [1, 2, 3])
    kv.cache_blocks(ghost, 3)  # no blocks: nothing registered, no error
    assert kv.block_table("ghost") == [] and kv.num_blocks_of("ghost") == 0
    assert kv.get_computed_blocks(make("probe", [1, 2, 3])) == 0


def test_a_request_id_reused_after_free_sees_its_new_tokens_only():
    kv = KVCacheManager(16, 2)
    computed(kv, make("r", [1, 2, 3, 4, 5]))
    kv.free("r")
    computed(kv, make("r", [7, 8, 9, 10, 11]))  # same id, other tokens, no lookup first
    assert kv.get_computed_blocks(make("p", [7, 8, 9, 10, 0])) == 4  # its blocks registered
    kv.free("r")
    again = make("r", [7, 8, 1, 2, 0])
    assert kv.get_computed_blocks(again) == 2  # no hit from the old request's hashes
    assert kv.get_computed_blocks(make("q", [1, 2, 3, 4, 0])) == 4  # the first one's too


def test_without_a_free_run_blocks_nobody_keeps_go_before_kept_ones():
    kv = KVCacheManager(8, 1)
    assert kv.allocate_slots(make("y", [1], max_tokens=2), 1)  # holds 0, keeps 1 and 2
    for rid, ids in (("h3", [3]), ("h5", [5])):
        kv._reserved.clear()  # (placed by hand: holders at 3 and 5, without extents)
        kv._cursor = ids[0]
        assert kv.allocate_slots(make(rid, ids, max_tokens=1), 1)
        kv._release(rid)
    kv._extents["y"], kv._reserved = range(0, 3), {1: "y", 2: "y"}
    x = make("x", [9, 9, 9], max_tokens=1)  # needs 3: no free run of 3 (4, 6-7 only)
    assert kv.allocate_slots(x, 3)
    assert sorted(kv.block_table("x")) == [4, 6, 7]  # y's kept blocks stay free for y


def test_an_evicted_block_is_registered_for_its_new_content():
    kv = KVCacheManager(1, 2)
    computed(kv, make("a", [1, 2], max_tokens=1))  # the one block holds a's prompt
    kv.free("a")
    computed(kv, make("b", [5, 6], max_tokens=1))  # the only block: a's is evicted
    kv.free("b")
    assert kv.get_computed_blocks(make("p", [1, 2, 0])) == 0
    kv.free("p")
    assert kv.get_computed_blocks(make("q", [5, 6, 0])) == 2


def test_extents_are_placed_next_fit_one_after_another():
    kv = KVCacheManager(8, 1)
    for i, rid in enumerate("abc"):
        assert kv.allocate_slots(make(rid, [i], max_tokens=1), 1)  # keeps 2 blocks
    assert [kv.block_table(r) for r in "abc"] == [[0], [2], [4]]


def test_an_extent_after_a_prefix_hit_keeps_only_what_the_request_can_still_use():
    kv = KVCacheManager(16, 2)
    computed(kv, make("a", [1, 2, 3, 4], max_tokens=1))  # blocks 0, 1 cached
    kv.free("a")
    b = make("b", [1, 2, 3, 4, 9], max_tokens=1)  # 3 blocks at most, 2 of them cached
    assert kv.get_computed_blocks(b) == 4
    assert kv.allocate_slots(b, 5)
    assert kv.allocate_slots(make("c", [50], max_tokens=1), 1)
    (b_new,) = kv.block_table("b")[2:]
    assert kv.block_table("c") == [b_new + 1]  # b kept one block, c comes right after


def test_the_longest_free_run_is_kept_when_none_is_long_enough():
    kv = KVCacheManager(8, 1)
    kv._reserved.update({3: "x", 5: "x"})  # free runs: 0-2, 4, 6-7
    assert kv._find_run(1, 8) == range(0, 3)  # the longest, not the last seen
    assert kv._find_run(3, 8) == range(0, 3)  # exactly `need` long is long enough
    assert kv._find_run(4, 8) is None
    kv._reserved = {2: "x", 5: "x"}  # free runs: 0-1, 3-4, 6-7 (equally long)
    assert kv._find_run(2, 8) == range(0, 2)  # the first of equals
