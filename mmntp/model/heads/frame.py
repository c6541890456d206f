"""A multi-token head: one trunk forward emits a whole frame of tokens (VITA-Audio's MCTP idea).

Audio frames are several tokens (residual-VQ levels of one codec frame, or a run of
cochlear tokens). Written flat into the sequence, a frame would cost one trunk forward
per token, and the first audio chunk would wait for `group` decode steps. `FrameHead`
instead reads the trunk's hidden state at the position before a frame and predicts the
frame's `group` tokens in order with a small depth MLP (Moshi's depth transformer, in
miniature): step j sees the hidden state, a learned step embedding, and the embeddings
of the tokens already drawn at steps < j, so the frame is sampled jointly, not as
independent marginals. The tokens are then appended to the sequence as usual, and the
next trunk forward takes the whole frame as one chunk.

Training is teacher-forced (`loss`); sampling goes through a `pick` callback so the
engine's sampler (per-request temperature / top-k / top-p and generators) draws every
token; `step` is the engine's per-step call (`heads.base.OutputHead`). Classifier-free
guidance mixes the conditional and unconditional logits at each step
(`mmntp.model.guidance.guide`); both rows then continue with the same drawn token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mmntp.model.guidance import guide
from mmntp.model.heads.base import StepOutput, StepRows
from mmntp.model.heads.config import positive_int

Pick = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class FrameHeadConfig:
    """cond_dim: the trunk's hidden size; spans: the global [lo, hi) ids of each step of a
    frame (a codec's levels in order, or one codebook repeated); hidden/depth: the MLP."""

    cond_dim: int
    spans: list[list[int]]
    hidden: int = 256
    depth: int = 2
    modality: str = "audio"

    def __post_init__(self) -> None:
        for name in ("cond_dim", "hidden", "depth"):
            positive_int(name, getattr(self, name))
        spans = [list(s) for s in self.spans] if isinstance(self.spans, (list, tuple)) else None
        if not spans or any(len(s) != 2 or not 0 <= s[0] < s[1] for s in spans):
            raise ValueError(
                f"spans must be a non-empty list of [lo, hi) id ranges, got {self.spans!r}"
            )
        self.spans = [[int(lo), int(hi)] for lo, hi in spans]

    @property
    def group(self) -> int:
        return len(self.spans)


class _Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(width)
        self.up = nn.Linear(width, 2 * width)
        self.down = nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(F.gelu(self.up(self.norm(x))))


class FrameHead(nn.Module):
    """hidden [N, D] -> `group` tokens per row, each within its step's span."""

    type_name: ClassVar[str] = "frame"

    def __init__(self, config: FrameHeadConfig) -> None:
        super().__init__()
        self.config = config
        sizes = [hi - lo for lo, hi in config.spans]
        offsets = torch.tensor([0, *sizes]).cumsum(0)
        self.register_buffer("offsets", offsets[:-1].clone(), persistent=False)
        self.sizes = sizes
        width = config.hidden
        self.inp = nn.Linear(config.cond_dim, width)
        self.step_emb = nn.Parameter(torch.zeros(config.group, width))
        self.code_emb = nn.Embedding(sum(sizes), width)  # every step's codes, side by side
        self.blocks = nn.Sequential(*(_Block(width) for _ in range(config.depth)))
        self.norm = nn.RMSNorm(width)
        self.out = nn.Linear(width, sum(sizes))  # step j's logits are its own slice
        nn.init.normal_(self.step_emb, std=0.02)
        nn.init.normal_(self.code_emb.weight, std=0.02)

    @property
    def group(self) -> int:
        return self.config.group

    @property
    def cond_dim(self) -> int:
        return self.config.cond_dim

    def spec(self) -> dict[str, Any]:
        return {"type": self.type_name, "config": asdict(self.config)}

    def _logits(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """x [..., width] (context of step `step`) -> local logits [..., size_step]."""
        y = self.norm(self.blocks(x + self.step_emb[step]))
        lo = int(self.offsets[step])
        hi = lo + self.sizes[step]
        return F.linear(y, self.out.weight[lo:hi], self.out.bias[lo:hi])  # this step's slice

    def _code(self, local: torch.Tensor, step: int) -> torch.Tensor:
        return self.code_emb(local + self.offsets[step])

    def local(self, ids: torch.Tensor) -> torch.Tensor:
        """Global ids [..., group] -> local codes of each step's span (ValueError outside)."""
        lo = torch.tensor([s[0] for s in self.config.spans], device=ids.device)
        local = ids - lo
        if bool(((local < 0) | (local >= torch.tensor(self.sizes, device=ids.device))).any()):
            raise ValueError("frame ids fall outside their steps' spans")
        return local

    def loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Summed cross-entropy of frames: hidden [N, D], targets [N, group] global ids."""
        local = self.local(targets)
        x = self.inp(hidden)  # [N, W]
        # Step j's context: x plus the embeddings of the true tokens of steps < j.
        codes = torch.stack([self._code(local[:, j], j) for j in range(self.group)], 1)
        prefix = torch.cat([torch.zeros_like(codes[:, :1]), codes[:, :-1].cumsum(1)], 1)
        context = x[:, None] + prefix  # [N, G, W]
        total = hidden.new_zeros((), dtype=torch.float32)
        for j in range(self.group):
            logits = self._logits(context[:, j], j).float()
            total = total + F.cross_entropy(logits, local[:, j], reduction="sum")
        return total

    def step(self, rows: StepRows) -> StepOutput:
        """A whole frame per row (`OutputHead`): ids and logprobs [R, group], each step's
        tokens drawn by the engine's sampler within that step's span."""
        reqs = rows.requests

        def pick(local: torch.Tensor, j: int):
            return rows.sampler.sample_span(local, reqs, self.config.spans[j][0], j)

        uncond, scales = rows.paired() if rows.guidance is not None else (None, None)
        ids, logprobs = self.sample(rows.hidden, pick, uncond, scales)
        return StepOutput(ids, logprobs)

    @torch.no_grad()
    def sample(
        self,
        hidden: torch.Tensor,
        pick: Pick,
        hidden_uncond: torch.Tensor | None = None,
        scales: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden [R, D] -> (global ids [R, group], logprobs [R, group]).

        `pick(local_logits [R, size_j], j)` draws step j's tokens (global ids, logprobs).
        With `hidden_uncond` and per-row `scales`, logits are guided at every step.
        """
        r = hidden.shape[0]
        guided = hidden_uncond is not None
        # Conditional and unconditional rows go through the MLP together: [2R, W] when guided.
        x = self.inp(torch.cat([hidden, hidden_uncond]) if guided else hidden)
        ids, lps = [], []
        for j in range(self.group):
            logits = self._logits(x, j)
            if guided:
                logits = guide(logits[:r], logits[r:], scales)
            tok, lp = pick(logits, j)
            code = self._code(tok - self.config.spans[j][0], j)
            x = x + (torch.cat([code, code]) if guided else code)
            ids.append(tok)
            lps.append(lp)
        return torch.stack(ids, 1), torch.stack(lps, 1)


def frame_starts(ids: torch.Tensor, begin_id: int, group: int, spans: list[list[int]]):
    """(row, position) of every complete frame's preceding position in a batch of documents.

    A frame starts right after `begin_id` and every `group` tokens after that while each
    step's token lies in its span (a truncated or ended segment stops the run). Returns
    (rows [N], positions [N]); the frame's tokens are ids[row, pos + 1 : pos + 1 + group].
    """
    rows, positions = [], []
    lo = torch.tensor([s[0] for s in spans])
    hi = torch.tensor([s[1] for s in spans])
    ids_cpu = ids.detach().cpu()
    length = ids_cpu.shape[1]
    for r, p in (ids_cpu == begin_id).nonzero().tolist():
        while p + group < length:
            frame = ids_cpu[r, p + 1 : p + 1 + group]
            if not bool(((frame >= lo) & (frame < hi)).all()):
                break
            rows.append(r)
            positions.append(p)
            p += group
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long, device=ids.device)  # noqa: E731
    return as_long(rows), as_long(positions)
