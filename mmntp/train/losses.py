"""The training objective as one module, so DDP sees every head's loss inside `forward`.

`TrainingLosses(model, frame_heads)(ids, targets)` returns the summed token
cross-entropy over non-ignored targets plus, for each multi-token frame head, its
teacher-forced frame cross-entropy (weighted) at every complete frame of the batch. The
trainer wraps this module, not the bare transformer, in DistributedDataParallel: all
parameters, the frame heads' included, are then used in the wrapped forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mmntp import sequence
from mmntp.model.frame_head import FrameHead, FrameHeadConfig, frame_starts
from mmntp.model.heads import register_head
from mmntp.model.transformer import Transformer
from mmntp.model.vocab import VocabLayout

IGNORE_INDEX = -100


@dataclass(frozen=True)
class FrameLoss:
    head: str  # name in model.heads
    begin_id: int  # the frames follow this special token
    weight: float


def add_frame_heads(
    model: Transformer, vocab: VocabLayout, tokenizers: dict, frame_heads: dict
) -> list[FrameLoss]:
    """Create the recipe's frame heads on `model` (named after their modality)."""
    losses = []
    for modality, spec in frame_heads.items():
        if modality not in tokenizers:
            raise ValueError(f"model.frame_heads.{modality}: the data has no {modality} tokenizer")
        tok = tokenizers[modality]
        spans = [list(s) for s in sequence.frame_spans(vocab, tok, modality)]
        group = int(spec.get("group", len(spans)))
        if group % len(spans):
            raise ValueError(
                f"model.frame_heads.{modality}.group must be a multiple of the tokenizer's "
                f"{len(spans)} codebooks, got {group}"
            )
        config = FrameHeadConfig(
            model.config.dim,
            spans * (group // len(spans)),
            hidden=int(spec.get("hidden", 256)),
            depth=int(spec.get("depth", 2)),
            modality=modality,
        )
        register_head(model, FrameHead(config), modality)
        begin = vocab.special(f"<begin_{modality}>")
        losses.append(FrameLoss(modality, begin, float(spec.get("weight", 1.0))))
    return losses


class TrainingLosses(nn.Module):
    """ids, targets [B, L] -> summed loss (token CE + weighted frame CE), fp32."""

    def __init__(self, model: Transformer, frame_losses: list[FrameLoss] = ()) -> None:
        super().__init__()
        self.model = model
        self.frame_losses = list(frame_losses)

    def forward(self, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        hidden = self.model.hidden_states(ids)  # [B, L, D]
        logits = self.model.heads["token"](hidden)
        total = F.cross_entropy(
            logits.float().flatten(0, 1),  # fp32 loss whatever the autocast
            targets.flatten(),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        for item in self.frame_losses:
            head = self.model.heads[item.head]
            rows, positions = frame_starts(ids, item.begin_id, head.group, head.config.spans)
            if len(rows) == 0:
                # Keep the head in the graph with a zero loss, so DDP finds its gradients.
                total = total + 0.0 * sum(p.sum() for p in head.parameters())
                continue
            steps = torch.arange(1, head.group + 1, device=ids.device)
            frames = ids[rows[:, None], positions[:, None] + steps]  # [N, group]
            h = hidden[rows, positions].float()
            total = total + item.weight * head.loss(h, frames)
        return total
