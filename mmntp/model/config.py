"""Model configuration and size presets (presets are data, not subclasses)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class ModelConfig:
    """Shape of a Llama-style decoder trunk.

    `continuous_inputs` maps a modality name to the width of the vectors that modality
    places at sequence positions (each gets its own input projection).
    """

    vocab_size: int
    dim: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None  # None = n_heads (plain multi-head attention)
    head_dim: int | None = None  # None = dim // n_heads
    ffn_dim: int | None = None  # None = SwiGLU's 8/3·dim rounded up to a multiple of 32
    max_seq_len: int = 2048
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    qk_norm: bool = False
    attention_bias: bool = False
    continuous_inputs: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.head_dim is None:
            if self.dim % self.n_heads:
                raise ValueError(f"dim={self.dim} is not divisible by n_heads={self.n_heads}")
            self.head_dim = self.dim // self.n_heads
        if self.ffn_dim is None:
            self.ffn_dim = _round_up(int(8 * self.dim / 3), 32)
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")
        if self.rope_theta <= 0:
            raise ValueError(f"rope_theta must be positive, got {self.rope_theta}")
        for modality, width in self.continuous_inputs.items():
            if not isinstance(width, int) or width <= 0:
                raise ValueError(f"continuous_inputs[{modality!r}] must be a positive int")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config fields: {', '.join(unknown)}")
        return cls(**data)


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


# Size presets: keyword arguments for ModelConfig (vocab_size comes from the vocabulary).
PRESETS: dict[str, dict[str, Any]] = {
    "test": dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=512),
    "default-tiny": dict(dim=192, n_layers=4, n_heads=6, n_kv_heads=2, max_seq_len=1024),
    "tiny": dict(dim=256, n_layers=4, n_heads=4, max_seq_len=2048),
    "small": dict(dim=512, n_layers=8, n_heads=8, n_kv_heads=4, max_seq_len=2048),
    "base": dict(dim=768, n_layers=12, n_heads=12, n_kv_heads=4, max_seq_len=4096),
}


def preset(name: str, vocab_size: int, **overrides: Any) -> ModelConfig:
    """Build a ModelConfig from a named size preset plus overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose from {sorted(PRESETS)}")
    return ModelConfig(vocab_size=vocab_size, **{**PRESETS[name], **overrides})
