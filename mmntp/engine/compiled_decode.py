"""One-row decode steps through torch.compile (inductor): `EngineConfig.compile_decode`.

A batch-1 decode step of a small model is a few hundred tiny ops; eager PyTorch spends
more on dispatching them than on the arithmetic. Compiled, the norms, rotations and
residual adds fuse into a handful of C++ loops around the matrix products, and the new
keys and values are written into the block store in place (an `index_put_` on the whole
store, which inductor re-inplaces; a view's slice assignment made it copy the store).
This is the CPU counterpart of CUDA graphs for decode; on GPU the same place takes them.

Scope: a step that is exactly one decode row, on a model laid out as a `FlatTrunk`; its
keys are read as one consecutive run of slots (the cache manager's extents keep a
request's own blocks so) or, after a prefix-cache hit, gathered inside the graph. Every
other step runs eagerly. Lengths are dynamic: one compile serves every position (a
handful more for positions and slots that torch specialises, such as 0 and 1).
The compiled step is not bitwise the eager one (fused reductions round differently):
outputs agree to float rounding, as the tests state.
Measured by `mmntp bench engine` on its tiny model (2026-12-03, 2 threads): transformers
1.81-1.86 ms a token, the eager engine 1.12, the engine with this 0.84-0.86; warm-up with
its compiles 13 s on a cold inductor cache.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mmntp.model.flat_trunk import FlatTrunk
from mmntp.model.transformer import Transformer

log = logging.getLogger(__name__)


class _RowAttention:
    """The attention backend of one decode row inside the compiled step."""

    def __init__(self, k_store, v_store, slot: torch.Tensor, keys) -> None:
        """keys: (start, length) of a consecutive run of slots, or the slot ids [n]."""
        self.k_store, self.v_store, self.slot, self.keys = k_store, v_store, slot, keys

    def attend(self, layer: int, q, k, v):
        """q [1, 1, H, Dh], new k/v [1, 1, Hkv, Dh] -> [1, 1, H, Dh]."""
        hkv = k.shape[2]
        index = (
            torch.full((hkv, 1), layer, dtype=torch.long, device=k.device),
            torch.arange(hkv, device=k.device)[:, None],
            self.slot[None],
        )
        self.k_store.index_put_(index, k[0, 0, :, None].to(self.k_store.dtype))
        self.v_store.index_put_(index, v[0, 0, :, None].to(self.v_store.dtype))
        if isinstance(self.keys, tuple):
            start, length = self.keys
            run = slice(start, start + length)
        else:  # a gather, fused into the attention kernel rather than copied out first
            run = self.keys
        keys, vals = self.k_store[layer, :, run], self.v_store[layer, :, run]  # [Hkv, n, Dh]
        out = F.scaled_dot_product_attention(
            q[0].transpose(0, 1), keys.to(q.dtype), vals.to(q.dtype), enable_gqa=True
        )  # [H, 1, Dh]
        return out.transpose(0, 1)[None]


def _step(flat: FlatTrunk, norm, head, x, cos, sin, k_store, v_store, slot, keys):
    """The trunk over one decode row, then the token head's logits and their greedy pick
    (argmax and log-softmax fuse into the graph too). A row that samples a vector or a
    frame ignores the logits: one graph for every row (a matrix-vector product more for
    those) rather than a second variant to compile, possibly mid-traffic."""
    hidden = norm(flat(x, cos, sin, _RowAttention(k_store, v_store, slot, keys)))[0]
    logits = F.linear(hidden, head)  # [1, V]
    ids = logits.argmax(-1)
    logprobs = logits.float().log_softmax(-1).gather(-1, ids[:, None])[:, 0]
    return hidden, logits, ids, logprobs


@dataclass
class CompiledRow:
    """What the compiled step produced: hidden [1, D], the token head's logits [1, V] and
    the greedy id [1] with its logprob [1]."""

    hidden: torch.Tensor
    logits: torch.Tensor
    greedy_ids: torch.Tensor
    greedy_logprobs: torch.Tensor


class CompiledDecode:
    """Runs a one-row decode step compiled; None where the step does not qualify."""

    def __init__(self, model: Transformer, k_store: torch.Tensor, v_store: torch.Tensor) -> None:
        self.model, self.k_store, self.v_store = model, k_store, v_store
        self.failed = False  # set once a compile failed: every step runs eagerly from then on
        # Default (automatic) dynamic shapes: the first graph is specialised, the next
        # makes only what changed (the key run's start and length) symbolic. dynamic=True
        # made every size symbolic and the kernels' index arithmetic 10x slower.
        self._fn = torch.compile(_step)
        # Every model, store size and variant (keys as a run or a gather, specialised then
        # generic shapes) is one cache entry of this one function: torch's default limit
        # of 8 entries would send later variants to eager.
        dynamo = torch._dynamo.config
        dynamo.recompile_limit = max(dynamo.recompile_limit, 64)

    def run(self, ids, positions, continuous, slot: int, keys):
        """ids, positions [1] of the row; `keys`: the slots of every key it sees, ending at
        `slot` (the new token's): a slice where its blocks are consecutive, else slot ids
        (a cached prefix's blocks, then its own) -> CompiledRow, or None when the model is
        not (or no longer) a FlatTrunk."""
        model = self.model
        flat = model.decode_trunk()
        if flat is None or self.failed:
            return None
        head = model.heads["token"].decode_weight()
        cos, sin = model.rope(positions[None])
        x = model.embed(ids[None], continuous)
        slot_t = torch.tensor([slot], device=ids.device)
        if isinstance(keys, slice):
            keys = (keys.start, keys.stop - keys.start)
        args = (flat, model.norm, head, x, cos, sin, self.k_store, self.v_store, slot_t, keys)
        try:
            return CompiledRow(*self._fn(*args))
        except Exception as exc:  # noqa: BLE001 - any compiler failure: serve eagerly instead
            # No C++ compiler, an op this build cannot compile...: this step runs eagerly
            # (writing the same keys and values again) and so does every later one.
            log.warning(
                "compile_decode off: torch.compile failed (%s: %s)", type(exc).__name__, exc
            )
            self.failed = True
            return None


def warm_up_prompts(vocab_size: int, block_size: int) -> list[list[int]]:
    """Prompts whose greedy decodes (a few tokens each, one request at a time) make every
    compile `compile_decode` needs happen. Three distinct ones read their keys as a run:
    torch specialises the first graph to the run's start (0 for the first request) and
    length, and compiles a generic one once both have changed. Two more start with a full
    block of an earlier prompt, so the prefix cache hands them that block and their keys
    are gathered: that graph, specialised, then generic."""
    fresh = [
        [(7 * i + k) % vocab_size for k in range(block_size + n)] for i, n in enumerate((4, 8, 12))
    ]
    shared = [
        fresh[i][:block_size] + [(5 + k * 3) % vocab_size for k in range(n)]
        for i, n in ((0, 6), (1, 10))
    ]
    return fresh + shared
