"""KVCacheManager: allocation, refcounted sharing, prefix hits, LRU eviction (no tensors)."""

import ast
from pathlib import Path

import pytest

from mmntp.engine.kv_cache import KVCacheManager, num_blocks_for_budget
from mmntp.engine.plans import free_plan
from mmntp.engine.request import Request


def make(rid, ids, max_tokens=8):
    return Request(rid, list(ids), free_plan(max_tokens))


def computed(kv, req):
    """Allocate and 'compute' the whole request, registering its full blocks."""
    assert kv.allocate_slots(req, req.num_tokens)
    kv.cache_blocks(req, req.num_tokens)


def test_modules_do_not_import_torch():
    root = Path(__file__).resolve().parents[1] / "mmntp" / "engine"
    for name in ("kv_cache.py", "scheduler.py"):
        tree = ast.parse((root / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] != "torch" for a in node.names), name
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] != "torch", name


def test_num_blocks_for_budget():
    block_bytes = 2 * 3 * 16 * 4 * 8 * 2  # K+V, layers, block, heads, head_dim, bf16
    assert num_blocks_for_budget(10 * block_bytes + 5, 16, 3, 4, 8, 2) == 10
    assert num_blocks_for_budget(block_bytes, 16, 3, 4, 8, 2) == 1
    with pytest.raises(ValueError, match="budget_bytes"):
        num_blocks_for_budget(block_bytes - 1, 16, 3, 4, 8, 2)
    with pytest.raises(ValueError, match="n_layers"):
        num_blocks_for_budget(block_bytes, 16, 0, 4, 8, 2)
    with pytest.raises(ValueError, match="block_size"):
        KVCacheManager(4, 0)


def test_allocation_is_all_or_nothing():
    kv = KVCacheManager(4, 4)
    a, b = make("a", range(12)), make("b", range(100, 109))
    assert kv.allocate_slots(a, 12)
    assert kv.num_blocks_of("a") == 3 and kv.num_free_blocks == 1
    assert not kv.allocate_slots(b, 9)  # needs 3, only 1 free
    assert kv.num_blocks_of("b") == 0 and kv.num_free_blocks == 1
    assert kv.allocate_slots(a, 12)  # already enough: nothing new
    assert kv.num_blocks_of("a") == 3
    assert kv.allocate_slots(a, 13)  # grows by one block
    assert kv.block_table("a") == [0, 1, 2, 3] and kv.usage == 1.0
    assert not kv.allocate_slots(a, 17)
    assert kv.num_blocks_of("a") == 4


def test_shared_prefix_hits_and_refcounts():
    kv = KVCacheManager(8, 4)
    a = make("a", range(10))
    computed(kv, a)  # blocks 0,1 full and cached; block 2 partial
    b = make("b", [*range(8), 50, 51, 52])
    assert kv.get_computed_blocks(b) == 8
    assert kv.block_table("b") == kv.block_table("a")[:2]
    assert kv.allocate_slots(b, b.num_tokens)
    assert kv.num_blocks_of("b") == 3 and kv.usage == 4 / 8  # 2 shared + 1 each

    kv.free("a")  # b still holds the shared blocks
    assert kv.num_free_blocks == 8 - 3
    big = make("big", range(200, 220))
    assert kv.allocate_slots(big, 20)  # takes every free block, none of b's
    assert not set(kv.block_table("big")) & set(kv.block_table("b"))
    assert not kv.allocate_slots(make("x", [1]), 1)

    other = make("other", [9, 9, 9, 9, 9])  # a different prefix: no hit
    assert kv.get_computed_blocks(other) == 0
    assert kv.num_blocks_of("other") == 0


def test_no_hits_past_cacheable_tokens():
    kv = KVCacheManager(8, 4)
    a = make("a", range(6))
    a.output_ids = [60, 61, 62, 63, 64, 65]  # outputs are not cacheable (num_cacheable == 6)
    assert a.num_cacheable_tokens == 6
    computed(kv, a)
    b = make("b", [*a.all_token_ids, 7, 7])  # same ids, but only block 0 was cacheable for a
    assert kv.get_computed_blocks(b) == 4


def test_last_token_always_computed():
    kv = KVCacheManager(8, 4)
    computed(kv, make("a", range(8)))
    same = make("same", range(8))  # all 8 tokens cached, but the last must be computed
    assert kv.get_computed_blocks(same) == 4
    longer = make("longer", range(9))
    assert kv.get_computed_blocks(longer) == 8


def test_lru_eviction_order():
    kv = KVCacheManager(6, 2)
    cached = {}
    for rid, ids in (("a", [1, 2]), ("b", [3, 4]), ("c", [5, 6])):
        req = make(rid, ids)
        computed(kv, req)
        cached[rid] = kv.block_table(rid)[0]
    for rid in "abc":  # freed in this order: a least recently
        kv.free(rid)
    partial = make("p", [7])  # one unhashed block, freed after the cached ones
    assert kv.allocate_slots(partial, 1)
    kv.free("p")

    d = make("d", range(10, 16))
    assert kv.allocate_slots(d, 6)  # uncached blocks first: every cached one survives
    assert not set(kv.block_table("d")) & set(cached.values())
    probe = make("probe", [1, 2, 0])
    assert kv.get_computed_blocks(probe) == 2  # a's block still findable
    kv.free("probe")  # a's block is now the most recently freed

    order = []
    for i in range(3):
        assert kv.allocate_slots(make(f"e{i}", [90 + i]), 1)
        order.append(kv.block_table(f"e{i}")[0])
    assert order == [cached["b"], cached["c"], cached["a"]]
    assert kv.get_computed_blocks(make("probe2", [1, 2, 0])) == 0  # evicted


def test_freed_unhashed_blocks_reused_before_cached():
    kv = KVCacheManager(3, 2)
    computed(kv, make("a", [1, 2]))
    kv.free("a")
    assert kv.allocate_slots(make("b", [5, 6, 7]), 3)  # both uncached blocks
    kv.free("b")
    assert kv.allocate_slots(make("c", [8]), 1)
    assert kv.get_computed_blocks(make("probe", [1, 2, 3])) == 2


def test_free_restores_usage():
    kv = KVCacheManager(10, 4)
    computed(kv, make("keep", range(5)))
    before, free_before = kv.usage, kv.num_free_blocks
    a = make("a", range(5))
    kv.get_computed_blocks(a)
    computed(kv, a)
    computed(kv, make("b", range(30, 41)))
    assert kv.usage > before
    kv.free("a")
    kv.free("b")
    assert kv.usage == before and kv.num_free_blocks == free_before
    kv.free("unknown")  # no-op
    assert kv.usage == before


def test_cache_blocks_idempotent_and_keeps_existing_mapping():
    kv = KVCacheManager(6, 2)
    a, b = make("a", [1, 2, 3]), make("b", [1, 2, 3])
    computed(kv, a)
    computed(kv, b)  # computed concurrently: same content, not looked up
    kv.cache_blocks(b, 3)
    block_a, block_b = kv.block_table("a")[0], kv.block_table("b")[0]
    probe = make("probe", [1, 2, 9])
    assert kv.get_computed_blocks(probe) == 2
    assert kv.block_table("probe") == [block_a]  # the first mapping is kept
    kv.free("probe")
    kv.free("b")  # its duplicate block stayed unhashed: reused before the cached one
    kv.free("a")
    assert kv._blocks[block_b].block_hash is None
    for i in range(4):  # every uncached free block
        assert kv.allocate_slots(make(f"n{i}", [4 + i]), 1)
        assert kv.block_table(f"n{i}")[0] != block_a
    assert kv.get_computed_blocks(make("probe2", [1, 2, 9])) == 2


def test_cache_only_computed_full_blocks():
    kv = KVCacheManager(6, 4)
    a = make("a", range(12))
    assert kv.allocate_slots(a, 12)
    kv.cache_blocks(a, 6)  # only block 0 is full and computed
    assert kv.get_computed_blocks(make("p1", range(13))) == 4
    kv.free("p1")
    kv.cache_blocks(a, 12)
    assert kv.get_computed_blocks(make("p2", range(13))) == 12


def test_get_computed_blocks_rejects_a_request_with_blocks():
    kv = KVCacheManager(4, 4)
    a = make("a", range(5))
    assert kv.allocate_slots(a, 5)
    with pytest.raises(ValueError, match="already holds blocks"):
        kv.get_computed_blocks(a)


def test_hit_rate():
    kv = KVCacheManager(8, 4)
    assert kv.prefix_cache_hit_rate == 0.0
    a = make("a", range(9))
    assert kv.get_computed_blocks(a) == 0
    computed(kv, a)
    assert kv.get_computed_blocks(make("b", range(9))) == 8
    assert kv.prefix_cache_hit_rate == pytest.approx(8 / 18)
    kv.reset_prefix_cache_stats()
    assert kv.prefix_cache_hit_rate == 0.0


def test_prefix_caching_disabled():
    kv = KVCacheManager(4, 4, enable_prefix_caching=False)
    a = make("a", range(9))
    computed(kv, a)
    kv.free("a")
    b = make("b", range(9))
    assert kv.get_computed_blocks(b) == 0
    assert kv.num_blocks_of("b") == 0 and kv.prefix_cache_hit_rate == 0.0
    assert kv._cached == {} and all(blk.block_hash is None for blk in kv._blocks)


def _consecutive(table):
    return all(b == a + 1 for a, b in zip(table, table[1:]))


def test_requests_growing_side_by_side_keep_consecutive_blocks():
    kv = KVCacheManager(64, 4)
    reqs = [make(f"r{i}", range(10 * i, 10 * i + 6), max_tokens=20) for i in range(3)]
    for r in reqs:
        assert kv.allocate_slots(r, r.num_tokens)
    for total in range(7, 27):  # one token each per step, interleaved
        for r in reqs:
            assert kv.allocate_slots(r, total)
    tables = [kv.block_table(r.request_id) for r in reqs]
    assert all(len(t) == 7 and _consecutive(t) for t in tables)
    assert len({b for t in tables for b in t}) == 21  # no block shared


def test_reserved_blocks_still_go_to_whoever_needs_them():
    kv = KVCacheManager(8, 4)
    a = make("a", range(4), max_tokens=28)  # may grow to 8 blocks: keeps the whole cache
    assert kv.allocate_slots(a, 4)
    b = make("b", range(50, 62))
    assert kv.allocate_slots(b, 12)  # 3 blocks, all kept for a: taken anyway
    assert kv.num_free_blocks == 4
    assert kv.allocate_slots(a, 20)  # a grows into what is left
    assert kv.num_free_blocks == 0 and not kv.allocate_slots(a, 21)
    assert sorted(kv.block_table("a") + kv.block_table("b")) == list(range(8))


def test_free_releases_reservation():
    kv = KVCacheManager(8, 4)
    a = make("a", range(4), max_tokens=28)
    assert kv.allocate_slots(a, 4)
    assert set(kv._reserved.values()) == {"a"}
    kv.free("a")
    assert not kv._reserved and not kv._extents
    b = make("b", range(50, 58), max_tokens=24)  # needs the whole cache in the end
    for total in range(8, 33):
        assert kv.allocate_slots(b, total)
    assert kv.block_table("b") == list(range(8))


def test_extent_search_wraps_and_is_bounded(monkeypatch):
    from mmntp.engine import kv_cache

    kv = KVCacheManager(8, 1)
    kv._cursor = 6  # blocks 6, 7 then 0, 1, 2: ids wrap, so the run starts again at 0
    assert kv._find_run(1, 3) == range(0, 3)
    monkeypatch.setattr(kv_cache, "MAX_RUN_SCAN", 4)
    kv._cursor = 0
    kv._reserved.update({1: "x"})  # runs 0 and 2..3 within the 4 ids scanned
    assert kv._find_run(1, 5) == range(2, 4)  # the longest run seen, not 4..7 beyond
