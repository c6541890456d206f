"""What the latent (flow / diffusion) heads share in their settings: the denoiser's shape,
per-request settings, and the checks both heads' configs run.

A head's config holds model properties (its denoiser, its default number of steps and
initial-noise temperature, its training schedule), never a guidance default: a request
that sets no guidance scale gets none (`mmntp.model.guidance.guidance_scale`), and the
user-facing defaults live in `mmntp.api`. Older model folders stored `guidance_scale: 1.0`
in a head's config; loading accepts and ignores it (`LEGACY_FIELDS`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any

NUM_TRAIN_TIMESTEPS = 1000  # the time scale both heads feed the net: [0, 1000]
LEGACY_FIELDS = ("guidance_scale",)  # accepted in a stored head config, and ignored


@dataclass
class DenoiserConfig:
    """Shape of the adaLN MLP denoiser.

    width: the vector the head reads and writes, a latent token's dim times `cells`
    (xAR-style k x k cells are predicted together as one flattened vector);
    cond_dim: the transformer's hidden size D; hidden / depth: the MLP's size;
    above: how many positions back the vector sits that also conditions the net (the
    cells per row of a raster, for the cell above the one predicted); 0 = none.
    """

    width: int
    cond_dim: int
    hidden: int = 256
    depth: int = 3
    cells: int = 1
    above: int = 0

    def __post_init__(self) -> None:
        for name in ("width", "cond_dim", "hidden", "depth", "cells"):
            positive_int(name, getattr(self, name))
        if not isinstance(self.above, int) or isinstance(self.above, bool) or self.above < 0:
            raise ValueError(f"above must be an integer >= 0, got {self.above!r}")
        if self.width % self.cells:
            raise ValueError(
                f"width={self.width} must be a multiple of cells={self.cells} "
                "(width = token dim x cells)"
            )

    @property
    def token_dim(self) -> int:
        return self.width // self.cells


@dataclass(frozen=True)
class ContinuousSettings:
    """Per-request sampling settings for a continuous head; None falls through."""

    num_steps: int | None = None
    temperature: float | None = None  # scale of the initial noise; 0 = no noise
    guidance_scale: float | None = None  # 1 = conditional only; None = no guidance

    def __post_init__(self) -> None:
        check_settings(self, NUM_TRAIN_TIMESTEPS, allow_none=True)


def positive_int(name: str, value: Any) -> None:
    """ValueError naming `name` unless value is an int > 0 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def finite(name: str, value: Any) -> None:
    """ValueError naming `name` unless value is a finite number (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def check_settings(obj: Any, max_steps: int, allow_none: bool = False) -> None:
    """Validate num_steps / temperature / guidance_scale on a config or settings object
    (those of the three it has)."""
    for name in ("num_steps", "temperature", "guidance_scale"):
        if not hasattr(obj, name):
            continue
        value = getattr(obj, name)
        if value is None and allow_none:
            continue
        if name == "num_steps":
            positive_int(name, value)
            if value > max_steps:
                raise ValueError(f"num_steps must be <= {max_steps}, got {value}")
        else:
            finite(name, value)
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")


def as_denoiser(value: DenoiserConfig | Mapping[str, Any]) -> DenoiserConfig:
    if isinstance(value, DenoiserConfig):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"denoiser must be a DenoiserConfig or a dict, got {type(value).__name__}")
    return from_dict(DenoiserConfig, value, "denoiser")


def from_dict(cls: type, data: Mapping[str, Any], where: str, ignore: tuple[str, ...] = ()):
    """cls(**data), naming unknown and missing fields; keys in `ignore` are dropped."""
    data = {k: v for k, v in data.items() if k not in ignore}
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown fields: {', '.join(unknown)}")
    required = [f.name for f in fields(cls) if f.default is MISSING and f.name not in data]
    if required:
        raise ValueError(f"{where}: missing fields: {', '.join(required)}")
    return cls(**data)
