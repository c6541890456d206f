"""The adaLN MLP denoiser both latent heads run (MAR's `SimpleMLPAdaLN`), and the inputs
that condition it on the vector `above` the one predicted (training's and the engine's)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from mmntp.model.heads.config import DenoiserConfig

FREQ_DIM = 256  # sinusoidal time features before the time MLP (MAR / DiT)


def timestep_embedding(t: torch.Tensor, dim: int = FREQ_DIM) -> torch.Tensor:
    """Sinusoidal features of times t [R] on the [0, 1000] scale -> [R, dim] (DiT / MAR)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]  # args: [R, half]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class AdaLNBlock(nn.Module):
    """Residual MLP block whose LayerNorm shift/scale and output gate come from the condition."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 3 * hidden))

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(c).chunk(3, dim=-1)  # each [R, H]
        return h + gate * self.mlp(self.norm(h) * (1 + scale) + shift)


class AdaLNDenoiser(nn.Module):
    """x_t [R, W], time t [R], condition z [R, D] -> prediction [R, W] (MAR's SimpleMLPAdaLN).

    The condition is time embedding + projected z; every block's gate and the output layer
    start at zero, so the untrained head predicts 0 and each block starts as the identity.

    With `above`, the vector `above` positions back (the cell above; `above_rows`) is added
    to the input stream as well. The trunk's hidden state carries it too, but only through
    attention, and what the heads get wrong is carrying an edge's exact place down to the
    next cell row. Its projection starts at zero, so a head given it computes what it
    did without it until training says otherwise (`init_from` an older head).
    """

    def __init__(self, config: DenoiserConfig) -> None:
        super().__init__()
        h = config.hidden
        self.input_proj = nn.Linear(config.width, h)
        self.time_mlp = nn.Sequential(nn.Linear(FREQ_DIM, h), nn.SiLU(), nn.Linear(h, h))
        self.cond_proj = nn.Linear(config.cond_dim, h)
        # the vector above and a 1, or zeros and a 0 where there is none (the first row)
        self.above_proj = nn.Linear(config.width + 1, h) if config.above else None
        self.blocks = nn.ModuleList(AdaLNBlock(h) for _ in range(config.depth))
        self.final_norm = nn.LayerNorm(h, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(h, 2 * h))
        self.output = nn.Linear(h, config.width)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for m in (self.time_mlp[0], self.time_mlp[2]):
            nn.init.normal_(m.weight, std=0.02)
        zero = [b.modulation[1] for b in self.blocks] + [self.final_modulation[1], self.output]
        if self.above_proj is not None:
            zero.append(self.above_proj)
        for m in zero:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor, above: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`above` [R, W + 1] from `above_rows` (None: no row has one); ignored without
        config.above."""
        dtype = self.output.weight.dtype
        h = self.input_proj(x.to(dtype))  # h: [R, H]
        if self.above_proj is not None:
            if above is None:
                above = x.new_zeros(x.shape[0], x.shape[1] + 1)
            h = h + self.above_proj(above.to(dtype))
        c = self.time_mlp(timestep_embedding(t).to(dtype)) + self.cond_proj(z.to(dtype))
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_modulation(c).chunk(2, dim=-1)
        return self.output(self.final_norm(h) * (1 + scale) + shift)  # [R, W]


def above_rows(vectors: Sequence[torch.Tensor | None], width: int, device=None) -> torch.Tensor:
    """The denoiser's `above` input [R, width + 1]: each row's vector and a 1, or zeros and
    a 0 where the row has none (`None`: a cell of the first row)."""
    out = torch.zeros(len(vectors), width + 1, device=device)
    for i, v in enumerate(vectors):
        if v is not None:
            out[i, :width] = v.to(device=device, dtype=out.dtype).flatten()
            out[i, width] = 1.0
    return out


def above_in_sequence(values: torch.Tensor, positions: torch.Tensor, offset: int) -> torch.Tensor:
    """Training's `above` input: vectors `values` [N, W] at increasing flat positions [N]
    -> [N, W + 1], each vector's neighbour `offset` positions earlier when that position
    holds one of `values` too (within the same image), else zeros and a 0."""
    n, width = values.shape
    want = positions - offset
    idx = torch.searchsorted(positions, want).clamp_max(max(n - 1, 0))
    found = positions[idx] == want
    out = values.new_zeros(n, width + 1, dtype=torch.float32)
    out[found, :width] = values[idx[found]].float()
    out[found, width] = 1.0
    return out
