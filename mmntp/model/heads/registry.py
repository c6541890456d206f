"""Heads by type name: rebuilding one from a checkpoint's spec, registering one on a model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from mmntp.model.heads.config import from_dict
from mmntp.model.heads.diffusion import DiffusionHead, DiffusionHeadConfig
from mmntp.model.heads.flow import FlowHead, FlowHeadConfig
from mmntp.model.heads.frame import FrameHead, FrameHeadConfig

HEAD_TYPES: dict[str, tuple[type[nn.Module], type]] = {
    FlowHead.type_name: (FlowHead, FlowHeadConfig),
    DiffusionHead.type_name: (DiffusionHead, DiffusionHeadConfig),
    FrameHead.type_name: (FrameHead, FrameHeadConfig),
}


def head_from_spec(spec: Mapping[str, Any], where: str = "head") -> nn.Module:
    """Rebuild a head (untrained weights) from its `spec()` (a checkpoint's config entry)."""
    if not isinstance(spec, Mapping) or spec.get("type") not in HEAD_TYPES:
        got = spec.get("type") if isinstance(spec, Mapping) else spec
        raise ValueError(f"{where}: type must be one of {sorted(HEAD_TYPES)}, got {got!r}")
    cls, config_cls = HEAD_TYPES[spec["type"]]
    config = spec.get("config")
    if not isinstance(config, Mapping):
        raise ValueError(f"{where}: config must be a dict, got {config!r}")
    try:
        ignore = getattr(config_cls, "ignored_fields", ())
        return cls(from_dict(config_cls, config, "config", ignore))
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def register_head(model: nn.Module, head: nn.Module, name: str | None = None) -> None:
    """`model.add_head(name or head.type_name, head)` after checking the condition width."""
    dim = model.config.dim
    if head.cond_dim != dim:
        raise ValueError(f"the head's cond_dim={head.cond_dim} must equal the model dim {dim}")
    model.add_head(name or head.type_name, head)
