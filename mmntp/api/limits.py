"""A service's request limits."""

from __future__ import annotations

import dataclasses
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
    # Sizes checked in O(1) before any other work on a request, so that no request can
    # cost the server more than a bounded amount of time before it is refused.
    max_prompt_parts: int = 16
    max_text_chars: int = 100_000  # one text part (a Tokenize call's text too)
    max_series_values: int = 100_000  # a history; only the last context_length are used
    max_quantiles: int = 99
    max_stop_ids: int = 64

    def for_model(self, max_seq_len: int) -> Limits:
        """These limits as one model can honour them: neither the prompt nor the output
        can exceed its context (their sum is checked per request)."""
        return dataclasses.replace(
            self,
            max_prompt_tokens=min(self.max_prompt_tokens, max_seq_len - 1),
            max_output_tokens=min(self.max_output_tokens, max_seq_len - 1),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Limits:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown limits: {sorted(unknown)}")
        return cls(**data)
