"""What the vector quantizers share (the image VQ and each residual level of the audio
codec): code-usage tracking and dead-code restarts from recent inputs.

A quantizer using `CodeUsage` has `embedding` [C, d] (a Parameter), `codebook_size`,
`code_dim`, `usage_decay`, and the buffers `usage` [C] and `recent` [N, d].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class CodeUsage:
    @torch.no_grad()
    def track_usage(self, codes: torch.Tensor, rows: torch.Tensor, keep: int = 4096):
        """Batch code histogram -> perplexity; in training also the usage EMA and the ring of
        recent inputs that dead codes restart from (`restart_value`)."""
        counts = torch.bincount(codes, minlength=self.codebook_size).float()
        probs = counts / counts.sum()
        if self.training:
            self.usage.mul_(self.usage_decay).add_(probs, alpha=1 - self.usage_decay)
            self.recent = torch.cat([rows.detach(), self.recent])[:keep]  # newest first
        return torch.exp(-(probs * torch.log(probs + 1e-10)).sum())

    def restart_value(self, rows: torch.Tensor) -> torch.Tensor:
        """What a restarted code is set to, from recent inputs: their unit vectors (codes
        that are l2-normalised in use)."""
        return F.normalize(rows, dim=-1)

    @torch.no_grad()
    def restart_dead_codes(
        self, min_usage: float | None = None, generator: torch.Generator | None = None
    ) -> int:
        """Re-initialises codes used less than `min_usage` from recent inputs.

        `min_usage` is a fraction of assignments (default: 1/(16 K), i.e. 16 times rarer
        than uniform). Returns how many codes were restarted; they start at the mean usage.
        """
        threshold = min_usage if min_usage is not None else 1.0 / (16 * self.codebook_size)
        dead = (self.usage < threshold).nonzero().flatten()
        if dead.numel() == 0 or self.recent.shape[0] == 0:
            return 0
        pick = torch.randint(0, self.recent.shape[0], (dead.numel(),), generator=generator)
        noise = 0.01 * torch.randn(dead.numel(), self.code_dim, generator=generator)
        self.embedding[dead] = self.restart_value(self.recent[pick] + noise)
        self.usage[dead] = 1.0 / self.codebook_size
        return int(dead.numel())
