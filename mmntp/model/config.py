"""Model configuration and size presets (presets are data, not subclasses)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from mmntp.api.errors import FieldError, check_int
from mmntp.api.errors import short_repr as _short
from mmntp.api.errors import type_name as _type_name


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
        theta = self.rope_theta
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not theta > 0:
            raise ValueError(f"rope_theta must be a positive number, got {theta!r}")
        for modality, width in self.continuous_inputs.items():
            if not isinstance(width, int) or width <= 0:
                raise ValueError(f"continuous_inputs[{modality!r}] must be a positive int")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """The config saved in a model folder, read as untrusted: every field's type and
        range is checked (`LIMITS`) before anything is sized from it. Raises `FieldError`
        naming the first bad field."""
        if not isinstance(data, dict):
            raise FieldError("", f"must be a JSON object, got {_type_name(data)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FieldError(unknown[0], f"unknown model config fields: {', '.join(unknown)}")
        if "vocab_size" not in data:
            raise FieldError("vocab_size", "is missing")
        for name, value in data.items():
            _check_field(name, value)
        if "continuous_inputs" in data:
            for modality, width in data["continuous_inputs"].items():
                check_int(f"continuous_inputs.{modality}", width, 1, MAX_CONTINUOUS_WIDTH)
        try:
            config = cls(**data)
        except ValueError as err:
            raise FieldError(_field_named(str(err), known), str(err)) from None
        rope_entries = config.max_seq_len * config.head_dim
        if rope_entries > MAX_ROPE_ENTRIES:
            raise FieldError(
                "max_seq_len",
                f"max_seq_len * head_dim = {rope_entries} exceeds {MAX_ROPE_ENTRIES} "
                "(the RoPE table)",
            )
        return config


# The sane range of each integer field of a saved config (inclusive); a config outside
# them is refused before anything is allocated from it. Generous: ~10x today's largest
# open models in every direction, far beyond what one process here could hold.
LIMITS: dict[str, tuple[int, int]] = {
    "vocab_size": (1, 1 << 24),
    "dim": (1, 1 << 16),
    "n_layers": (1, 1024),
    "n_heads": (1, 1024),
    "n_kv_heads": (1, 1024),
    "head_dim": (2, 4096),
    "ffn_dim": (1, 1 << 20),
    "max_seq_len": (1, 1 << 22),
}
MAX_CONTINUOUS_WIDTH = 1 << 16
MAX_ROPE_ENTRIES = 1 << 28  # max_seq_len * head_dim: each RoPE table (cos, sin) is float32
MAX_ROPE_THETA = 1e12
_OPTIONAL = ("n_kv_heads", "head_dim", "ffn_dim")  # null = derived
_BOOLS = ("tie_embeddings", "qk_norm", "attention_bias")


def _check_field(name: str, value: Any) -> None:
    if name in LIMITS:
        if value is None and name in _OPTIONAL:
            return
        check_int(name, value, *LIMITS[name])
    elif name in _BOOLS:
        if not isinstance(value, bool):
            raise FieldError(
                name, f"must be true or false, got {_type_name(value)} {_short(value)}"
            )
    elif name in ("rope_theta", "norm_eps"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FieldError(name, f"must be a number, got {_type_name(value)} {_short(value)}")
        lo, hi = (0.0, MAX_ROPE_THETA) if name == "rope_theta" else (0.0, 1.0)
        if not lo < value <= hi:  # NaN fails too
            raise FieldError(name, f"must lie in ({lo:g}, {hi:g}], got {value!r}")
    elif name == "continuous_inputs" and not isinstance(value, dict):
        raise FieldError(name, f"must be an object, got {_type_name(value)}")


def _field_named(message: str, known: set[str]) -> str:
    """The field a __post_init__ message starts with (they all name theirs first)."""
    head = message.split("=", 1)[0].split(" ", 1)[0]
    return head if head in known else ""


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
