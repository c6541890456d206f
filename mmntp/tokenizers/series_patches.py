"""Series values as continuous patches: the inputs and outputs of the next-patch head.

A series is standardised by its context's mean and standard deviation (Chronos-Bolt and
TimesFM normalise per instance too; a flow head's noise is N(0, 1), so targets near unit
scale suit it), then cut into patches of ``patch`` consecutive values, one per sequence
position. A context whose length is not a multiple of the patch keeps its most recent
whole patches; missing values are filled forward (leading ones with the first observed
value), because a patch vector cannot hold a gap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PatchState", "SeriesPatcher"]

# Standardised values beyond this are clipped: a context that is flat but for one spike
# would otherwise put later values hundreds of units out.
CLIP = 20.0


@dataclass(frozen=True)
class PatchState:
    """The context's location and scale: what decoding multiplies back."""

    loc: float
    scale: float


def _fill_forward(x: np.ndarray) -> np.ndarray:
    observed = np.flatnonzero(np.isfinite(x))
    if observed.size == 0:
        raise ValueError("values have no observed entry")
    last = np.maximum.accumulate(np.where(np.isfinite(x), np.arange(x.size), -1))
    return x[np.where(last >= 0, last, observed[0])]


@dataclass(frozen=True)
class SeriesPatcher:
    """Standardise and cut a series into patches of ``patch`` values, and back."""

    patch: int = 16

    def __post_init__(self) -> None:
        if self.patch < 1:
            raise ValueError(f"patch must be >= 1, got {self.patch}")

    def state(self, context: np.ndarray) -> PatchState:
        """Mean and standard deviation of the observed context (scale 1 when it is flat)."""
        x = np.asarray(context, dtype=np.float64).reshape(-1)
        observed = x[np.isfinite(x)]
        if observed.size == 0:
            raise ValueError("context has no observed value")
        std = float(observed.std())
        mean = float(observed.mean())
        scale = std if std > 1e-8 * max(1.0, abs(mean)) else max(abs(mean), 1.0)
        return PatchState(mean, scale)

    def encode(
        self, values: np.ndarray, state: PatchState | None = None
    ) -> tuple[np.ndarray, PatchState]:
        """(patches float32 shaped (len // patch, patch), state); ``state`` defaults to the
        values' own. The oldest ``len % patch`` values are dropped."""
        x = np.asarray(values, dtype=np.float64).reshape(-1)
        if x.size < self.patch:
            raise ValueError(f"need at least one patch of {self.patch} values, got {x.size}")
        state = state or self.state(x)
        x = _fill_forward(x[x.size % self.patch :])
        z = np.clip((x - state.loc) / state.scale, -CLIP, CLIP)
        return z.reshape(-1, self.patch).astype(np.float32), state

    def decode(self, patches: np.ndarray, state: PatchState) -> np.ndarray:
        """Patches shaped (..., n, patch) -> values (..., n * patch), float64, in data units."""
        z = np.asarray(patches, dtype=np.float64)
        return (z * state.scale + state.loc).reshape(*z.shape[:-2], -1)
