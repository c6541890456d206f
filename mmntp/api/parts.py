"""Prompt parts: what a request's prompt is made of, in order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mmntp.api.errors import FieldError


@dataclass
class TextPart:
    text: str


@dataclass
class TokenIdsPart:
    """Raw global ids, passed to the model unchanged (no <bos> added)."""

    ids: Sequence[int]


@dataclass
class TimeSeriesPart:
    """A univariate history, shaped (time_length,); NaN marks a missing value."""

    values: Sequence[float] | np.ndarray
    timestamps: Sequence[str] | None = None


@dataclass
class ImagePart:
    """An image prompt: PNG or JPEG file bytes."""

    data: bytes


@dataclass
class AudioPart:
    """An audio prompt: a WAV file, or signed 16-bit little-endian mono PCM at sample_rate."""

    wav: bytes | None = None
    pcm: bytes | None = None
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        if (self.wav is None) == (self.pcm is None):
            raise FieldError("audio", "needs exactly one of wav or pcm")
        if self.pcm is not None and self.sample_rate <= 0:
            raise FieldError("audio.pcm.sample_rate", f"must be > 0, got {self.sample_rate}")


@dataclass
class MotionPart:
    """A motion prompt shaped (frames, features)."""

    values: np.ndarray

    def __post_init__(self) -> None:
        values = np.asarray(self.values)
        if values.ndim != 2 or values.shape[1] == 0:
            raise FieldError("motion.values", f"must be (frames, features), got {values.shape}")


PromptPart = TextPart | TokenIdsPart | TimeSeriesPart | ImagePart | AudioPart | MotionPart
PROMPT_PARTS = (TextPart, TokenIdsPart, TimeSeriesPart, ImagePart, AudioPart, MotionPart)


def as_parts(prompt: object) -> list[PromptPart]:
    """A prompt as a list of parts: a string is one text part; raises FieldError naming the
    part that is none of the prompt part types."""
    if isinstance(prompt, str):
        return [TextPart(prompt)]
    if isinstance(prompt, PROMPT_PARTS):
        return [prompt]
    if not isinstance(prompt, (list, tuple)):
        raise FieldError("prompt", f"unsupported prompt part {type(prompt).__name__}")
    parts = list(prompt)
    for i, part in enumerate(parts):
        if isinstance(part, str):
            parts[i] = TextPart(part)
        elif not isinstance(part, PROMPT_PARTS):
            raise FieldError(f"prompt[{i}]", f"unsupported prompt part {type(part).__name__}")
    return parts
