"""The model runner: the only engine part that touches tensors.

One forward per step over the flat concatenation of every scheduled token (prefill
chunks and decode tokens of different requests, at different positions). Linear layers
see one [1, N, D] batch; attention goes through `PagedAttention`, which writes new keys
and values into a preallocated block store and attends over each request's blocks:
long decode rows one SDPA call each over their own slots (a view of the store where the
blocks are consecutive, as the cache manager's extents keep them), short ones in one
padded batch, each prefill chunk as its own causal call.
On GPU this backend is the place for FlexAttention / paged kernels and CUDA graphs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mmntp.engine.request import Request
from mmntp.engine.sampler import Sampler
from mmntp.model.heads import Guidance, StepRows, as_output_head
from mmntp.model.transformer import ContinuousInput, Transformer

# Decode rows with at least this many keys attend without padding: alone over their own
# slots (a view where their blocks are consecutive), or beside the other rows of the same
# length in one unmasked batch (a forecast's sample paths: one gather and one SDPA call
# instead of one per row). Shorter rows share one padded, masked batch, where the
# per-call overhead would outweigh the padding. Measured on 32 rows of 50-550 keys: padded
# and masked batches 6.7 ms per layer, rows one by one 2.1 ms (1.2 ms as views).
PER_ROW_MIN_KEYS = 64


class BlockStore:
    """Preallocated K/V slots for every layer: [layers, Hkv, num_blocks * block_size, Dh].

    Head-major, so a run of consecutive slots is one contiguous stretch per head: SDPA
    streams it as it would a dense cache. Measured on 300-key decode rows read cold from
    a 64 MB store: 60 us per call head-major, 90 us slot-major, 250 us gathered.
    """

    def __init__(self, model: Transformer, num_blocks: int, block_size: int) -> None:
        cfg = model.config
        param = model.tok_embeddings.weight
        shape = (cfg.n_layers, cfg.n_kv_heads, num_blocks * block_size, cfg.head_dim)
        self.k = torch.zeros(shape, dtype=param.dtype, device=param.device)
        self.v = torch.zeros(shape, dtype=param.dtype, device=param.device)
        self.block_size = block_size
        # Per-layer views made once: indexing the store afresh costs two dispatches a layer.
        self.layers = list(zip(self.k.unbind(0), self.v.unbind(0)))


Slots = slice | torch.Tensor  # KV slots: a contiguous run (a view, no copy) or slot ids


@dataclass
class _Prefill:
    rows: slice  # this chunk's tokens in the flat batch
    key_slots: Slots | None  # [ctx] slots of every key it may see (None: start 0)
    mask: torch.Tensor | None  # [1, 1, n, ctx] causal, offset by the chunk's start


@dataclass
class _Decodes:
    """Decode rows attending together: one row over its own slots (mask None), or a
    padded batch over [Bd, Kmax] slot ids (padding is slot 0, masked out)."""

    rows: torch.Tensor | int | None  # flat token indices [Bd], one index, or None: the step
    key_slots: Slots  # a slice or [K] slot ids (one row), or [Bd, Kmax] slot ids
    mask: torch.Tensor | None  # [Bd, 1, 1, Kmax]; None when no row is padded


class PagedAttention:
    """AttentionBackend over a BlockStore for one step's flat batch.

    Contiguous slot runs are sliced, not gathered: a lone request's blocks are usually
    consecutive, so batch-1 decode reads its keys in place (no copy, no mask).
    """

    def __init__(self, store: BlockStore, slots: Slots, decodes, prefills) -> None:
        self.store, self.slots, self.decodes, self.prefills = store, slots, decodes, prefills
        # One decode group covering the whole step: its result is the output as it is.
        self._only = decodes[0] if len(decodes) == 1 and decodes[0].rows is None else None

    def attend(self, layer, q, k, v):
        kc, vc = self.store.layers[layer]
        _write(kc, self.slots, k[0])  # this step's keys/values into their slots
        _write(vc, self.slots, v[0])
        if self._only is not None:
            return self._decode(self._only, q[0], kc, vc)[None]
        out = torch.empty_like(q[0])  # [N, H, Dh]
        for d in self.decodes:
            if isinstance(d.rows, int):
                out[d.rows] = self._decode(d, q[0, d.rows][None], kc, vc)[0]
            else:
                out[d.rows] = self._decode(d, q[0].index_select(0, d.rows), kc, vc)
        for p in self.prefills:
            qp = q[0, p.rows].transpose(0, 1)[None]  # [1, H, n, Dh]
            if p.key_slots is None:
                # A chunk from position 0 sees only its own keys: no gather from the store,
                # and plain causal SDPA takes the fused (flash) kernel.
                keys = k[0, p.rows].transpose(0, 1)[None].to(kc.dtype)  # [1, Hkv, n, Dh]
                vals = v[0, p.rows].transpose(0, 1)[None].to(vc.dtype)
                res = F.scaled_dot_product_attention(
                    qp, keys, vals, is_causal=True, enable_gqa=True
                )
            else:
                keys = _read(kc, p.key_slots)[None]  # [1, Hkv, ctx, Dh]
                vals = _read(vc, p.key_slots)[None]
                res = F.scaled_dot_product_attention(
                    qp, keys, vals, attn_mask=p.mask, enable_gqa=True
                )
            out[p.rows] = res[0].transpose(0, 1)
        return out[None]

    @staticmethod
    def _decode(d: _Decodes, q: torch.Tensor, kc, vc) -> torch.Tensor:
        """q [Bd, H, Dh] of one decode group -> attention output [Bd, H, Dh]."""
        if isinstance(d.key_slots, slice):  # one row over a consecutive run: views
            keys, vals = kc[None, :, d.key_slots], vc[None, :, d.key_slots]  # [1, Hkv, ctx, Dh]
        elif d.key_slots.dim() == 1:  # one row over fragmented slots
            keys = _read(kc, d.key_slots)[None]
            vals = _read(vc, d.key_slots)[None]
        else:
            shape = (kc.shape[0], *d.key_slots.shape, kc.shape[2])  # [Hkv, Bd, Kmax, Dh]
            flat = d.key_slots.flatten()
            keys = kc.index_select(1, flat).view(shape).transpose(0, 1)
            vals = vc.index_select(1, flat).view(shape).transpose(0, 1)
        res = F.scaled_dot_product_attention(
            q[:, :, None], keys, vals, attn_mask=d.mask, enable_gqa=True
        )
        return res[:, :, 0]


def _write(cache: torch.Tensor, slots: Slots, values: torch.Tensor) -> None:
    """values [n, Hkv, Dh] into one layer's cache [Hkv, S, Dh] at `slots`."""
    values = values.transpose(0, 1)
    if values.dtype != cache.dtype:
        values = values.to(cache.dtype)
    if isinstance(slots, slice):
        cache[:, slots] = values
    else:
        cache.index_copy_(1, slots, values)


def _read(cache: torch.Tensor, slots: Slots) -> torch.Tensor:
    """One layer's keys or values at `slots` -> [Hkv, n, Dh] (a view for a slice)."""
    return cache[:, slots] if isinstance(slots, slice) else cache.index_select(1, slots)


class ModelRunner:
    """Executes a SchedulerOutput: one forward, then tokens (or vectors) for finished chunks."""

    def __init__(
        self, model: Transformer, store: BlockStore, sampler: Sampler, compiled=None
    ) -> None:
        self.model, self.store, self.sampler = model, store, sampler
        self.compiled = compiled  # a CompiledDecode for one-row decode steps, or None
        self.device = model.tok_embeddings.weight.device

    @torch.inference_mode()
    def execute(self, scheduled) -> dict[str, tuple[Any, Any, torch.Tensor | None]]:
        """-> {request_id: (token id, logprob, vector or None)} for chunks that end a request's
        known tokens (a partial prefill chunk produces nothing); a frame head gives lists
        of a frame's ids and logprobs instead."""
        ids, positions, slots, continuous = self._flatten(scheduled)
        decodes, prefills = self._attention_plan(scheduled)
        row = self._compiled_row(ids, positions, slots, continuous, decodes, prefills)
        if row is not None:
            hidden = row.hidden
        else:
            backend = PagedAttention(self.store, slots, decodes, prefills)
            hidden = self.model.hidden_states(
                ids[None], positions=positions[None], continuous=continuous, backend=backend
            )[0]  # [N, D]
        ends, cursor = [], 0
        for s in scheduled:
            cursor += s.num_tokens
            if s.samples:
                ends.append((s.request, cursor - 1))
        if not ends:
            return {}
        requests = [r for r, _ in ends]
        if len(ends) == hidden.shape[0]:  # every token samples (decode only): all rows
            return self._produce(requests, hidden, row)
        last = hidden[torch.tensor([i for _, i in ends], device=self.device)]  # [R, D]
        return self._produce(requests, last)

    def _compiled_row(self, ids, positions, slots, continuous, decodes, prefills):
        """A CompiledRow from `compiled` when the step is one decode row; else None (the
        eager path)."""
        if self.compiled is None or prefills or len(decodes) != 1 or ids.shape[0] != 1:
            return None
        keys = decodes[0].key_slots
        if decodes[0].rows is not None or not isinstance(slots, slice):
            return None
        return self.compiled.run(ids, positions, continuous, slots.start, keys)

    def _produce(self, requests: list[Request], hidden: torch.Tensor, row=None):
        """Every primary row's next output, one path for every head: rows grouped by the
        head that produces it (`SegmentPlan.head_at`), each group one `step` of that head
        (`heads.base.OutputHead`) with its guided rows' shadows as unconditional hidden
        states; a shadow then gets its partner's output.
        -> {request_id: (token id or a frame's ids, logprob(s), vector or None)}"""
        out: dict[str, tuple[Any, Any, torch.Tensor | None]] = {}
        index = {r.request_id: i for i, r in enumerate(requests)}
        primary = [i for i, r in enumerate(requests) if not r.is_shadow]
        # The scheduler puts both rows of a guided pair in the same step when they sample.
        uncond = {i: index[requests[i].partner.request_id] for i in primary if requests[i].partner}
        groups: dict[str, list[int]] = {}
        for i in primary:
            r = requests[i]
            groups.setdefault(r.plan.head_at(len(r.output_ids)), []).append(i)
        for name, rows in groups.items():
            reqs = [requests[i] for i in rows]
            step_rows = StepRows(
                _take(hidden, rows),
                reqs,
                self.sampler,
                _guidance(rows, uncond, requests, hidden),
                _history(reqs),
                row,  # a compiled row: one row, so one group
            )
            produced = as_output_head(self.model.heads[name]).step(step_rows)
            if produced.ids is None:  # vectors, fed back at the plan's placeholder id
                ids, lps = [r.plan.placeholder for r in reqs], [0.0] * len(reqs)
            else:
                ids, lps = produced.ids.tolist(), produced.logprobs.tolist()
            vectors = [None] * len(reqs) if produced.vectors is None else produced.vectors
            for r, t, lp, vec in zip(reqs, ids, lps, vectors):
                out[r.request_id] = (t, lp, vec)
        for i, j in uncond.items():
            out[requests[j].request_id] = out[requests[i].request_id]
        return out

    # -- step inputs ---------------------------------------------------------------------

    def _flatten(self, scheduled):
        """Flat ids, positions, KV slots [N] and the continuous inputs of this step."""
        ids, positions, slots = [], [], []
        vectors: dict[str, tuple[list[int], list[torch.Tensor]]] = {}
        bs = self.store.block_size
        for s in scheduled:
            req, start, end = s.request, s.start, s.start + s.num_tokens
            offset = len(ids)
            ids.extend(req.all_token_ids[start:end])
            positions.extend(range(start, end))
            slots.append(_slots(s.block_table, start, end, bs))
            for pos, modality, value in _vectors_in(req, start, end):
                idx, vals = vectors.setdefault(modality, ([], []))
                idx.append(offset + pos - start)
                vals.append(value)
        n = len(ids)
        continuous = []
        for modality, (idx, vals) in vectors.items():
            mask = torch.zeros(1, n, dtype=torch.bool, device=self.device)
            mask[0, idx] = True
            order = sorted(range(len(idx)), key=idx.__getitem__)  # masked_scatter is row-major
            values = torch.stack([vals[i] for i in order]).to(self.device)
            continuous.append(ContinuousInput(modality, mask, values))
        as_long = lambda xs: torch.tensor(xs, dtype=torch.long, device=self.device)  # noqa: E731
        if len(slots) == 1 and isinstance(slots[0], slice):
            step_slots: Slots = slots[0]
        else:  # one tensor from a list: a decode row's slot is a 1-slot slice
            flat: list[int] = []
            for x in slots:
                flat.extend(range(x.start, x.stop) if isinstance(x, slice) else x.tolist())
            step_slots = as_long(flat)
        return as_long(ids), as_long(positions), step_slots, continuous

    def _attention_plan(self, scheduled):
        bs, dev = self.store.block_size, self.device
        dec_rows, dec_tables, dec_lens, prefills, cursor = [], [], [], [], 0
        for s in scheduled:
            ctx = s.start + s.num_tokens  # keys visible to the chunk's last token
            n = s.num_tokens
            if n == 1:
                dec_rows.append(cursor)
                dec_tables.append(s.block_table)
                dec_lens.append(ctx)
            elif s.start == 0:
                prefills.append(_Prefill(slice(cursor, cursor + n), None, None))
            else:
                key_slots = _on(_slots(s.block_table, 0, ctx, bs), dev)
                q_pos = torch.arange(s.start, ctx, device=dev)[:, None]
                mask = (torch.arange(ctx, device=dev)[None] <= q_pos)[None, None]
                prefills.append(_Prefill(slice(cursor, cursor + n), key_slots, mask))
            cursor += n
        if not prefills and len(dec_rows) == 1:  # the whole step is one decode row
            return [_Decodes(None, _on(_slots(dec_tables[0], 0, dec_lens[0], bs), dev), None)], []
        by_len: dict[int, list[int]] = {}
        for i, n in enumerate(dec_lens):
            by_len.setdefault(n if n >= PER_ROW_MIN_KEYS else 0, []).append(i)
        decodes = []
        for n, group in by_len.items():
            pick = lambda xs: [xs[i] for i in group]  # noqa: E731, B023
            if n == 0:  # the short rows
                decodes.append(_padded(pick(dec_rows), pick(dec_tables), pick(dec_lens), bs, dev))
            elif len(group) == 1:
                i = group[0]
                decodes.append(
                    _Decodes(dec_rows[i], _on(_slots(dec_tables[i], 0, n, bs), dev), None)
                )
            else:
                slots = _slot_matrix(pick(dec_tables), n, bs, dev)
                decodes.append(_Decodes(torch.tensor(pick(dec_rows), device=dev), slots, None))
        if not prefills and len(decodes) == 1:
            decodes[0].rows = None  # one group is the whole step, in step order
        return decodes, prefills


def _padded(rows: list[int], tables: list[list[int]], lens: list[int], bs: int, device):
    """One SDPA batch of decode rows: key slots padded to the longest row (slot 0), masked
    beyond each row's length."""
    kmax = max(lens)
    slots = _slot_matrix(tables, kmax, bs, device)  # [Bd, Kmax]
    lens_t = torch.tensor(lens, device=device)
    valid = torch.arange(kmax, device=device)[None] < lens_t[:, None]
    mask = valid[:, None, None] if min(lens) < kmax else None
    return _Decodes(torch.tensor(rows, device=device), slots.masked_fill(~valid, 0), mask)


def _slot_matrix(tables: list[list[int]], length: int, bs: int, device) -> torch.Tensor:
    """Slot ids of positions 0..length-1 of each block table -> [rows, length]; a table
    shorter than that is padded with block 0."""
    nb = -(-length // bs)
    blocks = torch.tensor([t[:nb] + [0] * (nb - len(t[:nb])) for t in tables], device=device)
    ids = blocks[:, :, None] * bs + torch.arange(bs, device=device)  # [rows, nb, bs]
    return ids.flatten(1)[:, :length]


def _take(x: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """x[rows] along dim 0, without a copy when rows are all of x in order."""
    if len(rows) == x.shape[0] and rows[0] == 0 and rows[-1] == len(rows) - 1:
        return x  # rows are distinct and ascending (primary rows in step order)
    return x[rows]


def _guidance(rows, uncond, requests, hidden) -> Guidance | None:
    """The guided rows of a group: their indices in it, their shadows' hidden states and
    their scales; None when no row of the group has a shadow."""
    guided = [k for k, i in enumerate(rows) if i in uncond]
    if not guided:
        return None
    shadows = hidden[[uncond[rows[k]] for k in guided]]
    scales = torch.tensor([requests[rows[k]].guidance_scale for k in guided])
    return Guidance(guided, shadows, scales)


def _history(reqs: list[Request]):
    """`StepRows.history`: each request's vector k positions before its next output."""

    def back(k: int) -> list[torch.Tensor | None]:
        return [_vector_at(r, r.num_prompt_tokens + len(r.output_ids) - k) for r in reqs]

    return back


def _slots(table: list[int], start: int, end: int, bs: int) -> Slots:
    """KV slots of positions start..end-1 through a block table: a slice where the blocks
    are consecutive (the common case), else a tensor of slot ids [end - start]."""
    first, last = start // bs, (end - 1) // bs + 1
    blocks = table[first:last]
    lo, hi = start - first * bs, end - first * bs  # within the run of blocks
    if all(b == a + 1 for a, b in zip(blocks, blocks[1:])):
        base = blocks[0] * bs
        return slice(base + lo, base + hi)
    ids = (torch.tensor(blocks, dtype=torch.long)[:, None] * bs + torch.arange(bs)).flatten()
    return ids[lo:hi]


def _on(slots: Slots, device) -> Slots:
    return slots if isinstance(slots, slice) else slots.to(device)


def _vector_at(req: Request, position: int) -> torch.Tensor | None:
    """The request's vector at `position` (prompt or output), or None."""
    return next((v for _, _, v in _vectors_in(req, position, position + 1)), None)


def _vectors_in(req: Request, start: int, end: int):
    """(position, modality, vector) of the request's vectors with start <= position < end."""
    for vec in req.prompt_vectors:
        if start <= vec.position < end:
            yield vec.position, vec.modality, vec.value
    base = req.num_prompt_tokens
    for step, value in req.output_vectors.items():
        if start <= base + step < end:
            yield base + step, req.plan.modality, value
