"""Paged KV cache bookkeeping with a hash-based prefix cache (vLLM v1 style).

Plain Python over integer block ids: the runner owns the actual K/V storage and reads
a request's block table. Block records are made once; a block moves between owners
(refcounted) and the free queue, and keeps its hash while free so a later request with
the same prefix can pick it up again until the block is reused for something else.

Allocation keeps each request's blocks consecutive where it can (extents, as file
systems do): a request's first fresh blocks come from a run of free uncached blocks long
enough for its whole possible length, and the rest of that run stays softly reserved
for its growth. A request whose blocks are consecutive is read by the runner as one
slice of the block store, with no gather. Reservations never cost capacity: when
nothing else is free, a reserved block goes to whoever needs it.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

_ROOT_HASH = bytes(16)  # parent of a request's first block
MAX_RUN_SCAN = 4096  # block ids an extent search looks at before settling


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
        self._reserved: dict[int, str] = {}  # free block id -> request it is kept for
        self._extents: dict[str, range] = {}  # request id -> the blocks reserved for it
        self._cursor = 0  # next-fit: where the search for a free run starts
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
        rid = request.request_id
        table = self._tables.get(rid, [])
        need = -(-num_tokens_total // self.block_size) - len(table)
        if need <= 0:
            return True
        if need > len(self._free):
            return False
        table = self._tables.setdefault(rid, table)
        if not self._in_extent(rid, table, need):
            final = -(-request.max_total_tokens // self.block_size)
            want = max(need, final - len(table))
            self._reserve(rid, need, want)
        for _ in range(need):
            table.append(self._pop_free(rid, self._next_in_extent(rid, table)))
        return True

    def _next_in_extent(self, rid: str, table: list[int]) -> int | None:
        """Where rid's next block goes in its extent: after its last block, or the extent's
        start when its blocks so far lie elsewhere (cached prefix blocks)."""
        extent = self._extents.get(rid)
        if extent is None:
            return None
        return table[-1] + 1 if table and table[-1] in extent else extent.start

    def _in_extent(self, rid: str, table: list[int], need: int) -> bool:
        """Whether the next `need` blocks rid takes are all still kept for it."""
        nxt = self._next_in_extent(rid, table)
        if nxt is None:
            return False
        return all(self._reserved.get(b) == rid for b in range(nxt, nxt + need))

    def _reserve(self, rid: str, need: int, want: int) -> None:
        """Keep a run of `want` free uncached blocks (or the longest run of at least `need`)
        for rid; without one, its blocks come from the free queue as they are."""
        self._release(rid)
        run = self._find_run(need, want)
        if run is not None:
            self._extents[rid] = run
            for b in run:
                self._reserved[b] = rid

    def _find_run(self, need: int, want: int) -> range | None:
        """Next fit from the cursor over at most MAX_RUN_SCAN block ids: the first run of
        `want` free, uncached, unreserved blocks, else the longest one seen of at least
        `need` (the cap bounds an admission's cost on a large, fragmented cache)."""
        best: range | None = None
        n, start, length = self.num_blocks, None, 0
        span = min(n, MAX_RUN_SCAN)
        for i in range(span + 1):  # one past the span, so a run reaching it closes
            b = (self._cursor + i) % n
            usable = i < span and self._usable(b)
            if usable and start is not None and b == start + length:
                length += 1
            else:  # the run so far (if any) ends here
                if start is not None and length >= need and (best is None or length > len(best)):
                    best = range(start, start + length)
                start, length = (b, 1) if usable else (None, 0)  # b may begin the next run
            if start is not None and length == want:
                self._cursor = (start + want) % n
                return range(start, start + want)
        return best

    def _usable(self, block_id: int) -> bool:
        return (
            block_id in self._free
            and block_id not in self._reserved
            and self._blocks[block_id].block_hash is None
        )

    def _pop_free(self, rid: str, nxt: int | None) -> int:
        """A free block for rid: the next one of its extent, else in eviction order the first
        uncached block nobody keeps, then one kept for another request (it falls back to
        the queue), and only then a cached block (evicted, least recently used first)."""
        if nxt is not None and self._reserved.get(nxt) == rid:
            block_id = nxt
        else:
            uncached = (b for b in self._free if self._blocks[b].block_hash is None)
            block_id = next((b for b in uncached if b not in self._reserved), None)
            if block_id is None:  # every reserved block is free and uncached
                block_id = next(iter(self._reserved)) if self._reserved else next(iter(self._free))
        del self._free[block_id]
        self._reserved.pop(block_id, None)  # taken by its owner, or from one who kept it
        block = self._blocks[block_id]
        if block.block_hash is not None:  # evict: its content is about to be overwritten
            if self._cached.get(block.block_hash) == block_id:
                del self._cached[block.block_hash]
            block.block_hash = None
        block.ref_cnt = 1
        return block_id

    def _release(self, rid: str) -> None:
        """Drop what is still kept for rid (blocks it took are no longer reserved)."""
        for b in self._extents.pop(rid, ()):
            if self._reserved.get(b) == rid:
                del self._reserved[b]

    def _take(self, block_id: int) -> None:
        block = self._blocks[block_id]
        if block.ref_cnt == 0:
            del self._free[block_id]
        block.ref_cnt += 1

    def free(self, request_id) -> None:
        """Release the request's blocks; cached ones stay findable until reused."""
        table = self._tables.pop(request_id, [])
        self._release(request_id)
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
