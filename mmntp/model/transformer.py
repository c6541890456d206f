"""Llama-style decoder trunk: RMSNorm, RoPE, SwiGLU, grouped-query attention, optional QK-norm.

Attention goes through an `AttentionBackend` so the same weights run in training (plain
causal SDPA), in the reference loop (a fixed-shape KV cache, `KVCache`) and in the
engine (a block cache that implements the same two methods).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from mmntp.model.config import ModelConfig
from mmntp.model.flat_trunk import FlatTrunk
from mmntp.model.heads.token import TokenHead
from mmntp.model.ops import apply_rope, column_major, rms_norm, rope_factors


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class RopeTable:
    """`rope_factors` of every position up to max_len, computed once; lookups replace
    per-step trig. Entries are exactly the factors of each position (the same float32
    ops), so a lookup equals computing them afresh.
    """

    def __init__(self, max_len: int, head_dim: int, theta: float) -> None:
        self.max_len, self.head_dim, self.theta = max_len, head_dim, theta
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [B, T] -> cos, signed sin [B, T, 1, head_dim] (float32)."""
        table = self._tables.get(positions.device)
        if table is None:
            every = torch.arange(self.max_len, device=positions.device)[None]  # [1, S]
            cos, sin = rope_factors(every, self.head_dim, self.theta)  # [1, S, 1, Dh]
            table = self._tables[positions.device] = (cos[0], sin[0])
        if positions.device.type == "cpu":
            # The lookup's own bounds check finds positions past max_seq_len, where a
            # max() first would cost a reduction and a sync on every decode step.
            try:
                return table[0][positions], table[1][positions]
            except IndexError:
                return rope_factors(positions, self.head_dim, self.theta)
        if positions.numel() and int(positions.max()) >= self.max_len:  # past max_seq_len
            return rope_factors(positions, self.head_dim, self.theta)
        return table[0][positions], table[1][positions]


class AttentionBackend(Protocol):
    """Where keys/values live and how queries see them. One instance per forward."""

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q [B, T, H, Dh], new k/v [B, T, Hkv, Dh] -> attention output [B, T, H, Dh]."""
        ...


class CausalAttention:
    """No cache: every row attends causally within this forward (training, full forward)."""

    def attend(self, layer, q, k, v):  # noqa: ARG002 - same signature as the cache
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=True
        )
        return out.transpose(1, 2)


class KVCache:
    """Fixed-shape key/value buffers [layers, B, Hkv, S, Dh], written in place at positions.

    Call `bind(positions)` once per forward; it builds the causal mask over the prefix
    seen so far so each layer's `attend` is one index write plus one SDPA call.
    """

    def __init__(
        self,
        config: ModelConfig,
        batch_size: int,
        max_len: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        self.max_len = max_len or config.max_seq_len
        shape = (config.n_layers, batch_size, config.n_kv_heads, self.max_len, config.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self._positions: torch.Tensor | None = None
        self._mask: torch.Tensor | None = None
        self._kv_len = 0
        self._rows = torch.arange(batch_size, device=device)[:, None]

    def bind(self, positions: torch.Tensor) -> KVCache:
        """positions [B, T] of the tokens about to be written; returns self."""
        top = int(positions.max()) + 1
        if top > self.max_len:
            raise ValueError(f"position {top - 1} exceeds the KV cache length {self.max_len}")
        self._kv_len = max(self._kv_len, top)
        keys = torch.arange(self._kv_len, device=positions.device)
        self._mask = (keys[None, None, :] <= positions[:, :, None])[:, None]  # [B, 1, T, S]
        self._positions = positions
        return self

    def attend(self, layer, q, k, v):
        pos = self._positions
        self.k[layer][self._rows, :, pos] = k.to(self.k.dtype)  # [B, T, Hkv, Dh] scattered
        self.v[layer][self._rows, :, pos] = v.to(self.v.dtype)
        keys = self.k[layer, :, :, : self._kv_len]
        values = self.v[layer, :, :, : self._kv_len]
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            keys.to(q.dtype),
            values.to(q.dtype),
            attn_mask=self._mask,
            enable_gqa=True,
        )
        return out.transpose(1, 2)


class FusedLinears:
    """Linear layers that read the same input, stored as row blocks of one matrix.

    Each layer's weight (and bias) becomes a view of the fused one, so parameters,
    state dicts, optimisers and checkpoints see the layers as before, and an in-place
    update of a layer is an update of the fused matrix. At inference one matmul then
    replaces several (on this CPU the fused product's columns are bitwise those of the
    separate products). `current()` answers None once any layer's storage was replaced
    (`.to(dtype)`, a new Parameter), and callers fall back to the separate layers.
    """

    def __init__(self, linears: list[nn.Linear], column_major_storage: bool = False) -> None:
        weight = torch.cat([lin.weight.detach() for lin in linears])  # [sum(out), in]
        if column_major_storage:
            weight = column_major(weight)
        sizes = [lin.out_features for lin in linears]
        for lin, view in zip(linears, weight.split(sizes)):
            lin.weight.data = view
        bias = None
        if linears[0].bias is not None:
            bias = torch.cat([lin.bias.detach() for lin in linears])
            for lin, view in zip(linears, bias.split(sizes)):
                lin.bias.data = view
        self.weight, self.bias = weight, bias
        # (module's parameter dict, the Parameter, the address of its fused view): checked
        # on every call, so kept to a dict lookup and a pointer per tensor.
        self._views = [
            (lin._parameters, name, param, param.data_ptr())
            for lin in linears
            for name, param in lin._parameters.items()
            if param is not None
        ]

    def is_live(self) -> bool:
        """Whether every layer still holds the same Parameters, living in the fused storage."""
        for params, name, param, ptr in self._views:  # a loop: cheaper than all(genexpr)
            if params[name] is not param or param.data_ptr() != ptr:
                return False
        return True

    def current(self) -> FusedLinears | None:
        """self while live and no gradient is wanted (the fused weight is not a
        Parameter: autograd must see the layers)."""
        if torch.is_grad_enabled() or not self.is_live():
            return None
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] -> [..., sum(out)], the layers' outputs side by side."""
        return F.linear(x, self.weight, self.bias)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv_heads, self.head_dim = (
            config.n_heads,
            config.n_kv_heads,
            config.head_dim,
        )
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.dim, config.n_heads * config.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.dim, config.n_kv_heads * config.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.dim, config.n_kv_heads * config.head_dim, bias=bias)
        self.o_proj = nn.Linear(config.n_heads * config.head_dim, config.dim, bias=bias)
        self.q_norm = RMSNorm(config.head_dim, config.norm_eps) if config.qk_norm else None
        self.k_norm = RMSNorm(config.head_dim, config.norm_eps) if config.qk_norm else None
        self.qkv: FusedLinears | None = None  # see Transformer.use_decode_layout

    def forward(self, x, cos, sin, backend: AttentionBackend) -> torch.Tensor:
        b, t, _ = x.shape
        fused = self.qkv.current() if self.qkv is not None else None
        if fused is not None:
            q, k, v = self._fused_qkv(fused, x, cos, sin)
        else:
            q, k, v = self._separate_qkv(x, cos, sin)
        out = backend.attend(self.layer, q, k, v)  # [B, T, H, Dh]
        return self.o_proj(out.reshape(b, t, self.n_heads * self.head_dim))

    def _fused_qkv(self, fused: FusedLinears, x, cos, sin):
        """One matmul for q, k and v, one rotation for q and k together (the heads sit
        side by side): the same values as `_separate_qkv`, five dispatches fewer."""
        b, t, _ = x.shape
        qkv = fused(x).view(b, t, -1, self.head_dim)  # [B, T, H + 2 Hkv, Dh]; no QK-norm
        qk = apply_rope(qkv[:, :, : self.n_heads + self.n_kv_heads], cos, sin)
        return qk[:, :, : self.n_heads], qk[:, :, self.n_heads :], qkv[:, :, -self.n_kv_heads :]

    def _separate_qkv(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(b, t, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)
        self.gate_up: FusedLinears | None = None  # see Transformer.use_decode_layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = self.gate_up.current() if self.gate_up is not None else None
        if fused is not None:
            gate, up = fused(x).chunk(2, dim=-1)
            return self.down_proj(F.silu(gate) * up)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.dim, config.norm_eps)
        self.attn = Attention(config, layer)
        self.mlp_norm = RMSNorm(config.dim, config.norm_eps)
        self.mlp = SwiGLU(config.dim, config.ffn_dim)

    def forward(self, x, cos, sin, backend):
        x = x + self.attn(self.attn_norm(x), cos, sin, backend)
        return x + self.mlp(self.mlp_norm(x))


@dataclass
class ContinuousInput:
    """Vectors of one modality placed at the True positions of `mask` [B, T].

    values: [N, width] with N = mask.sum(), filled in row-major order of the mask.
    """

    modality: str
    mask: torch.Tensor
    values: torch.Tensor


class Transformer(nn.Module):
    """Decoder-only trunk over a mixed sequence of ids and continuous vectors.

    `heads` is the slot for output heads: "token" (softmax over the vocabulary) now;
    flow, diffusion and multi-token heads register there later with `add_head`.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.input_proj = nn.ModuleDict(
            {m: nn.Linear(w, config.dim) for m, w in config.continuous_inputs.items()}
        )
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.rope = RopeTable(config.max_seq_len, config.head_dim, config.rope_theta)
        self.heads = nn.ModuleDict({"token": TokenHead(config.dim, config.vocab_size)})
        self._flat = None  # a FlatTrunk once use_decode_layout ran (not a module: no state)
        self.reset_parameters()
        if config.tie_embeddings:
            self.heads["token"].proj.weight = self.tok_embeddings.weight

    def reset_parameters(self) -> None:
        # GPT-2 style: N(0, 0.02), residual output projections scaled by depth.
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
            else:
                std = 0.02
                if name.endswith(("o_proj.weight", "down_proj.weight")):
                    std /= math.sqrt(2 * self.config.n_layers)
                nn.init.normal_(p, 0.0, std)

    def add_head(self, name: str, head: nn.Module) -> None:
        if name in self.heads:
            raise ValueError(f"head {name!r} already exists")
        self.heads[name] = head

    def embed(
        self, ids: torch.Tensor, continuous: list[ContinuousInput] | None = None
    ) -> torch.Tensor:
        """ids [B, T] (ignored where a continuous vector sits) -> embeddings [B, T, D]."""
        x = self.tok_embeddings(ids)
        for item in continuous or ():
            if item.modality not in self.input_proj:
                raise ValueError(f"model has no continuous input for modality {item.modality!r}")
            proj = self.input_proj[item.modality](item.values.to(x.dtype))  # [N, D]
            # Under autocast the projection comes out bf16 while the embedding stays fp32.
            x = x.masked_scatter(item.mask[..., None], proj.to(x.dtype))
        return x

    def hidden_states(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        continuous: list[ContinuousInput] | None = None,
        backend: AttentionBackend | None = None,
    ) -> torch.Tensor:
        """Run the trunk. ids [B, T]; positions [B, T] (default 0..T-1) -> hidden [B, T, D].

        With `cache`, keys/values are written at `positions` and queries attend to
        everything cached at or before their own position.
        """
        b, t = ids.shape
        if positions is None:
            positions = torch.arange(t, device=ids.device).expand(b, t)
        if backend is None:
            backend = cache.bind(positions) if cache is not None else CausalAttention()
        cos, sin = self.rope(positions)
        x = self.embed(ids, continuous)
        flat = self.decode_trunk()
        if flat is not None:
            x = flat(x, cos, sin, backend)
        else:
            for layer in self.layers:
                x = layer(x, cos, sin, backend)
        return self.norm(x)

    def forward(self, ids: torch.Tensor, **kwargs) -> torch.Tensor:
        """Logits [B, T, V] from the token head; kwargs as for `hidden_states`."""
        return self.heads["token"](self.hidden_states(ids, **kwargs))

    def use_decode_layout(self) -> None:
        """Lay the trunk's weights out for decode: fused and widening-column-major.

        Values and shapes stay as they are; only storage changes (`FusedLinears`):
        - q/k/v become row blocks of one matrix (one matmul and one rotation instead of
          three and two) and gate/up blocks of one column-major matrix;
        - the widening projections (gate/up, the token head) are column-major, so a
          one-row decode runs x @ W^T over a contiguous [in, out] matrix. Measured on
          this CPU for one row (fp32): the tiny bench model's [4096, 256] head
          538 -> 174 us, a ~50M model's [1376, 512] gate/up 337 -> 158 us and
          [16384, 512] head 3.6 -> 1.7 ms; 32 or 512 rows run as fast either way, and
          narrowing layers (down, q/k/v/o) are slower column-major, so they stay
          row-major.
        The continuous heads' layers are left alone: re-laid, a guided pair's vectors
        stopped matching the unguided request's bit for bit. A head tied to the
        embedding keeps its row-major weight (embedding lookups read rows) and computes
        logits without autograd from a column-major copy (the bundled model: 5 MB,
        697 -> 253 us a row). At inference the layers then run as a `FlatTrunk`, one loop
        over these weights. Idempotent; checkpoints save contiguous.
        """
        for block in self.layers:
            attn, mlp = block.attn, block.mlp
            # QK-norm normalises q and k apart before rotating them: those keep three matmuls.
            if attn.q_norm is None and (attn.qkv is None or not attn.qkv.is_live()):
                attn.qkv = FusedLinears([attn.q_proj, attn.k_proj, attn.v_proj])
            if mlp.gate_up is None or not mlp.gate_up.is_live():
                mlp.gate_up = FusedLinears([mlp.gate_proj, mlp.up_proj], True)
        self._flat = FlatTrunk(self) if FlatTrunk.applies_to(self) else None
        head = self.heads["token"]
        if head.proj.weight is self.tok_embeddings.weight:  # tied: a copy, without autograd
            head.column_major_copy = True
        elif head.proj.weight.stride(0) != 1:  # idempotent
            head.proj.weight.data = column_major(head.proj.weight.data)

    def decode_trunk(self) -> FlatTrunk | None:
        """The layers as one flat loop (`FlatTrunk`) while the decode layout is on and
        its weights current, else None (the module path): what `hidden_states` runs
        and a compiled decode step traces."""
        return self._flat.current() if self._flat is not None else None

    def new_cache(
        self, batch_size: int, max_len: int | None = None, dtype: torch.dtype | None = None
    ) -> KVCache:
        param = self.tok_embeddings.weight
        return KVCache(self.config, batch_size, max_len, dtype or param.dtype, param.device)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights counted once
