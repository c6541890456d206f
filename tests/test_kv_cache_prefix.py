"""The prefix cache's block hash is chained: a block's content after a different prefix
is a different block (its K/V were computed attending to other tokens) and must miss."""

import torch

from mmntp.api import SamplingParams
from mmntp.engine import Engine, EngineConfig, Request, free_plan
from mmntp.engine.kv_cache import KVCacheManager, hash_block
from mmntp.model.config import preset
from mmntp.model.reference import generate_reference
from mmntp.model.transformer import Transformer

GREEDY = SamplingParams(temperature=0)


def make(rid, ids, max_tokens=8):
    return Request(rid, list(ids), free_plan(max_tokens))


def computed(kv, req):
    assert kv.allocate_slots(req, req.num_tokens)
    kv.cache_blocks(req, req.num_tokens)


def test_hash_depends_on_the_parent():
    ids = [5, 6, 7, 8]
    root = bytes(16)
    first = hash_block(root, [1, 2, 3, 4])
    assert hash_block(first, ids) != hash_block(root, ids)
    assert hash_block(first, ids) != hash_block(hash_block(root, [9, 9, 9, 9]), ids)
    assert hash_block(first, ids) == hash_block(hash_block(root, [1, 2, 3, 4]), ids)


def test_same_block_after_a_different_prefix_misses():
    kv = KVCacheManager(16, 4)
    computed(kv, make("a", [1, 2, 3, 4, 5, 6, 7, 8, 9]))  # blocks [1..4], [5..8] cached
    moved = make("moved", [5, 6, 7, 8, 1, 2, 3, 4, 0])  # a's second block, first here
    assert kv.get_computed_blocks(moved) == 0
    assert kv.block_table("moved") == []
    kv.free("moved")
    same = make("same", [1, 2, 3, 4, 5, 6, 7, 8, 0])  # the real prefix still hits
    assert kv.get_computed_blocks(same) == 8
    assert kv.block_table("same") == kv.block_table("a")[:2]


def test_engine_output_after_a_moved_block_equals_reference():
    """End to end: the K/V of [5, 6, 7, 8] computed at positions 4..7 after [1, 2, 3, 4]
    must not be reused for a prompt that starts with [5, 6, 7, 8]."""
    torch.manual_seed(0)
    model = Transformer(preset("test", 300)).eval()
    engine = Engine(
        model, EngineConfig(block_size=4, kv_cache_bytes=1 << 20, max_num_batched_tokens=96)
    )
    first = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    moved = [5, 6, 7, 8, 1, 2, 3, 4, 10]
    a = Request("a", first, free_plan(6), GREEDY)
    engine.run_to_completion([a])
    b = Request("b", moved, free_plan(6), GREEDY)
    engine.run_to_completion([b])
    ref = generate_reference(model, moved, 6, GREEDY)
    assert b.output_ids == ref.token_ids[0]
    torch.testing.assert_close(
        torch.tensor(b.output_logprobs), torch.tensor(ref.logprobs[0]), atol=1e-4, rtol=0
    )
