"""A service's request limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Limits:
    """Service limits; requests past them get a FieldError naming the field."""

    max_prompt_tokens: int = 2048
    max_output_tokens: int = 1024
    timeseries_context_length: int = 512  # longer contexts keep their most recent values
    timeseries_min_context: int = 8
    timeseries_max_horizon: int = 64
    timeseries_max_samples: int = 100
    max_image_pixels: int = 1024 * 1024  # width x height of an input or output image
    max_audio_seconds: float = 60.0  # duration of an input or output audio clip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Limits:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown limits: {sorted(unknown)}")
        return cls(**data)
