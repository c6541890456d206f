"""Paged KV cache bookkeeping with a hash-based prefix cache (vLLM v1 style).

Plain Python over integer block ids: the runner owns the actual K/V storage and reads
a request's block table. Block records are made once; a block moves between owners
(refcounted) and the free queue, and keeps its hash while free so a later request with
the same prefix can pick it up again until the block is reused for something else.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

_ROOT_HASH = bytes(16)  # parent of a request's first block


def num_blocks_for_budget(
    budget_bytes: int,
    block_size: int,
    n_layers: int,
    n_kv_heads: int,
    head_dim: int,
    dtype_bytes: int,
) -> int:
    """How many blocks (K and V of every layer) fit in `budget_bytes`."""
    args = {
        "block_size": block_size,
        "n_layers": n_layers,
        "n_kv_heads": n_kv_heads,
        "head_dim": head_dim,
        "dtype_bytes": dtype_bytes,
    }
    for name, value in args.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    block_bytes = 2 * n_layers * block_size * n_kv_heads * head_dim * dtype_bytes
    if not isinstance(budget_bytes, int) or budget_bytes < block_bytes:
        raise ValueError(
            f"budget_bytes {budget_bytes!r} holds no KV block (one block needs {block_bytes} bytes)"
        )
    return budget_bytes // block_bytes


def hash_block(parent: bytes, token_ids: Sequence[int]) -> bytes:
    """Chained hash of one full block: depends on this block's ids and every earlier one."""
    h = hashlib.blake2b(parent, digest_size=16)
    h.update(array("q", token_ids).tobytes())
    return h.digest()


@dataclass(slots=True)
class KVBlock:
    block_id: int
    ref_cnt: int = 0
    block_hash: bytes | None = None  # set while the block's content is findable by hash


class KVCacheManager:
    """Owns the block pool: allocation, refcounted sharing, prefix-cache lookup, LRU eviction."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        if not isinstance(num_blocks, int) or num_blocks < 1:
            raise ValueError(f"num_blocks must be a positive integer, got {num_blocks!r}")
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._blocks = [KVBlock(i) for i in range(num_blocks)]
        # Every block with ref_cnt 0, in eviction order: uncached blocks at the head (reused
        # first), then cached ones from least to most recently freed.
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self._cached: dict[bytes, int] = {}  # block hash -> block id
        self._tables: dict[str, list[int]] = {}  # request id -> block ids in order
        self._hashes: dict[str, list[bytes]] = {}  # request id -> hashes of its full blocks
        self._num_cached: dict[str, int] = {}  # request id -> leading blocks already registered
        self._query_tokens = 0
        self._hit_tokens = 0

    # -- prefix cache ------------------------------------------------------------------

    def get_computed_blocks(self, request) -> int:
        """Attach the cached blocks of the request's prefix; return the tokens they cover."""
        if not self.enable_prefix_caching:
            return 0
        rid = request.request_id
        if self._tables.get(rid):
            raise ValueError(f"request {rid!r} already holds blocks; look up before allocating")
        # The last token is always computed, so its logits exist.
        limit = min(request.num_cacheable_tokens, request.num_tokens - 1)
        hashes = self._block_hashes(request, limit // self.block_size)
        table = self._tables.setdefault(rid, [])
        for h in hashes:
            block_id = self._cached.get(h)
            if block_id is None:
                break
            self._take(block_id)
            table.append(block_id)
        self._num_cached[rid] = len(table)
        hit = len(table) * self.block_size
        self._query_tokens += request.num_tokens
        self._hit_tokens += hit
        return hit

    def cache_blocks(self, request, num_computed_tokens: int) -> None:
        """Make the request's full, computed, id-only blocks findable by later requests."""
        if not self.enable_prefix_caching:
            return
        rid = request.request_id
        table = self._tables.get(rid, [])
        limit = min(num_computed_tokens, request.num_cacheable_tokens)
        n_full = min(limit // self.block_size, len(table))
        done = self._num_cached.get(rid, 0)
        if n_full <= done:
            return
        hashes = self._block_hashes(request, n_full)
        for i in range(done, n_full):
            block = self._blocks[table[i]]
            # An identical block already cached (computed concurrently) keeps its mapping;
            # this copy stays unhashed and is reused first once freed.
            if block.block_hash is None and hashes[i] not in self._cached:
                block.block_hash = hashes[i]
                self._cached[hashes[i]] = block.block_id
        self._num_cached[rid] = n_full

    def _block_hashes(self, request, n_blocks: int) -> list[bytes]:
        """Hashes of the request's first `n_blocks` full blocks (extended lazily, kept)."""
        hashes = self._hashes.setdefault(request.request_id, [])
        if len(hashes) < n_blocks:
            bs = self.block_size
            ids = request.all_token_ids
            parent = hashes[-1] if hashes else _ROOT_HASH
            for i in range(len(hashes), n_blocks):
                parent = hash_block(parent, ids[i * bs : (i + 1) * bs])
                hashes.append(parent)
        return hashes[:n_blocks]

    # -- allocation --------------------------------------------------------------------

    def allocate_slots(self, request, num_tokens_total: int) -> bool:
        """Own enough blocks for `num_tokens_total` tokens; all or nothing."""
        table = self._tables.get(request.request_id, [])
        need = -(-num_tokens_total // self.block_size) - len(table)
        if need <= 0:
            return True
        if need > len(self._free):
            return False
        table = self._tables.setdefault(request.request_id, table)
        for _ in range(need):
            block_id, _ = self._free.popitem(last=False)
            block = self._blocks[block_id]
            if block.block_hash is not None:  # evict: its content is about to be overwritten
                if self._cached.get(block.block_hash) == block_id:
                    del self._cached[block.block_hash]
                block.block_hash = None
            block.ref_cnt = 1
            table.append(block_id)
        return True

    def _take(self, block_id: int) -> None:
        block = self._blocks[block_id]
        if block.ref_cnt == 0:
            del self._free[block_id]
        block.ref_cnt += 1

    def free(self, request_id) -> None:
        """Release the request's blocks; cached ones stay findable until reused."""
        table = self._tables.pop(request_id, [])
        self._hashes.pop(request_id, None)
        self._num_cached.pop(request_id, None)
        # Reversed, so a request's later blocks (least likely shared) are evicted first.
        for block_id in reversed(table):
            block = self._blocks[block_id]
            block.ref_cnt -= 1
            if block.ref_cnt == 0:
                self._free[block_id] = None
                self._free.move_to_end(block_id, last=block.block_hash is not None)

    # -- views -------------------------------------------------------------------------

    def block_table(self, request_id) -> list[int]:
        return list(self._tables.get(request_id, []))

    def num_blocks_of(self, request_id) -> int:
        return len(self._tables.get(request_id, []))

    @property
    def usage(self) -> float:
        """Fraction of blocks held by at least one request."""
        return 1.0 - len(self._free) / self.num_blocks

    @property
    def num_free_blocks(self) -> int:
        """Blocks allocatable now (refcount 0, cached or not)."""
        return len(self._free)

    @property
    def prefix_cache_hit_rate(self) -> float:
        """Prefix-cache hit tokens / looked-up tokens since the last reset (0 if none)."""
        return self._hit_tokens / self._query_tokens if self._query_tokens else 0.0

    def reset_prefix_cache_stats(self) -> None:
        self._query_tokens = 0
        self._hit_tokens = 0
