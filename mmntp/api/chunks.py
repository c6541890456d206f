"""Stream chunks: the ONE set of types the pipeline yields, the server sends and the SDK
returns. Arrays are what a caller computes with; `png` and `pcm16()` are the wire form."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TextChunk:
    """New text since the previous chunk."""

    text: str


@dataclass(frozen=True)
class TokensChunk:
    """New raw token ids and their natural-log probabilities."""

    ids: list[int]
    logprobs: list[float]


@dataclass(frozen=True)
class SeriesChunk:
    """One forecast step: its median, quantiles by level and every path's value, shaped
    (num_samples,) (empty when the server was not asked to return samples)."""

    step: int
    median: float
    quantiles: dict[float, float]
    samples: np.ndarray


@dataclass(frozen=True)
class ImageChunk:
    """A preview (rows_done < total_rows, later rows gray) or, when `final`, the image:
    PNG bytes, and the pixels uint8 (height, width, 3) where the producer had them."""

    png: bytes
    rows_done: int
    total_rows: int
    final: bool
    pixels: np.ndarray | None = None

    @classmethod
    def from_pixels(cls, pixels: np.ndarray, rows_done: int, total_rows: int, final: bool):
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        return cls(buf.getvalue(), rows_done, total_rows, final, pixels)

    def image(self) -> np.ndarray:
        """The pixels uint8 (height, width, 3), decoded from the PNG if need be."""
        if self.pixels is not None:
            return self.pixels
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(self.png)).convert("RGB"))


@dataclass(frozen=True)
class AudioChunk:
    """New mono audio: float32 `samples` in [-1, 1] starting at sample `first_sample`;
    `frames` codec frames made it (0 where unknown, as on the client side)."""

    samples: np.ndarray
    sample_rate: int
    first_sample: int
    frames: int = 0

    @classmethod
    def from_pcm16(cls, pcm: bytes, sample_rate: int, first_sample: int) -> AudioChunk:
        """The inverse of `pcm16()`: 16-bit PCM back to float32 samples."""
        ints = np.frombuffer(pcm, dtype="<i2")
        return cls((ints / PCM_SCALE).astype(np.float32), sample_rate, first_sample)

    def pcm16(self) -> bytes:
        """Signed 16-bit little-endian PCM, the wire format."""
        return pcm16(self.samples)


PCM_SCALE = 32767


def pcm16(clip: np.ndarray) -> bytes:
    """A float clip in [-1, 1] as raw little-endian signed 16-bit PCM (the stream format)."""
    return (np.clip(clip, -1, 1) * PCM_SCALE).round().astype("<i2").tobytes()


@dataclass(frozen=True)
class MotionChunk:
    """Frames from `first_frame` on: values shaped (frames, features)."""

    first_frame: int
    values: np.ndarray


@dataclass(frozen=True)
class Final:
    """The end of a stream: why it ended, token usage and the server's timings."""

    finish_reason: str  # "stop" | "length" | "abort" | "deadline" | "unspecified"
    prompt_tokens: int
    output_tokens: int
    queue_seconds: float
    first_chunk_seconds: float
    total_seconds: float
    request_id: str = ""


Chunk = TextChunk | TokensChunk | SeriesChunk | ImageChunk | AudioChunk | MotionChunk | Final
