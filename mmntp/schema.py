"""The data of the user-facing API: prompt parts, output specs, results and stream chunks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmntp.model.sampling import SamplingParams

DEFAULT_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# Chronos' sampling defaults for forecasting: plain temperature 1 with top-k 50.
FORECAST_SAMPLING = SamplingParams(temperature=1.0, top_k=50)
# Text-to-image defaults: plain sampling with classifier-free guidance (LlamaGen-style).
# Guidance 1.5 was chosen for stage 7 of the bundled model on 144 validation captions of
# seed 5150 that `mmntp eval image` does not use (VQ right colour and shape: 76.4 % at 1.5,
# 75.0 % at 2, 60.4 % at 2.5; stage 7 over-steers at 3, where it drew 52-54 % right shapes).
IMAGE_SAMPLING = SamplingParams(temperature=1.0, top_k=0, guidance_scale=1.5)
# Text-to-audio defaults: cooled top-k sampling with guidance, chosen on validation tone
# prompts that `mmntp eval audio` does not use (144 prompts of seed 5150; guidance 1 / 1.5 /
# 2 / 3 kept 77 / 84 / 85 / 76 % within a semitone at stage 5, 88 / 96 / 94 / 88 % at
# stage 6; docs/benchmarks.md).
AUDIO_SAMPLING = SamplingParams(temperature=0.7, top_k=20, guidance_scale=2.0)


# -- prompt parts ---------------------------------------------------------------------


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


PromptPart = TextPart | TokenIdsPart | TimeSeriesPart


# -- output specs -------------------------------------------------------------------


@dataclass
class TextOutput:
    max_tokens: int = 256


@dataclass
class TokensOutput:
    """Unconstrained ids after a raw-id prompt (for tests and model debugging)."""

    max_tokens: int = 16
    stop_ids: Sequence[int] = ()


@dataclass
class TimeSeriesOutput:
    horizon: int
    num_samples: int = 20
    quantiles: Sequence[float] = DEFAULT_QUANTILES


@dataclass
class ImageOutput:
    """An image of width x height pixels (0 = the tokenizer's native size) from `head`.

    The model generates at its native size; other sizes are resampled from it.
    """

    width: int = 0
    height: int = 0
    head: str = "vq"  # "vq" | "flow" | "diffusion"
    preview_every_rows: int = 0  # 0 = every 2 token rows


@dataclass
class AudioOutput:
    """`seconds` of audio (rounded up to whole codec frames), streamed as PCM chunks.

    The first chunk holds `first_chunk_frames` codec frames (0: what one forward makes, so it
    comes at once), later ones `chunk_frames` (0: about 100 ms of audio). `frame_head`
    False samples the same frames flattened, one token
    per forward through the token head (the baseline the frame head is measured against).
    """

    seconds: float = 1.0
    first_chunk_frames: int = 0
    chunk_frames: int = 0
    frame_head: bool = True


OutputSpec = TextOutput | TokensOutput | TimeSeriesOutput | ImageOutput | AudioOutput


# -- results ------------------------------------------------------------------------


@dataclass
class Forecast:
    """Sample paths shaped (num_samples, horizon) and their per-step summaries."""

    samples: np.ndarray
    median: np.ndarray
    quantiles: dict[float, np.ndarray]


@dataclass
class GenerationOutput:
    modality: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" | "length" | "abort" | "deadline"
    text: str | None = None
    forecast: Forecast | None = None
    image: np.ndarray | None = None  # uint8 (height, width, 3)
    audio: np.ndarray | None = None  # float32 mono samples in [-1, 1]
    sample_rate: int = 0  # of `audio`
    prompt_tokens: int = 0
    output_tokens: int = 0  # summed over rows (sample paths)
    queue_seconds: float | None = None  # arrival -> first engine step (earliest row)


@dataclass
class TokensDelta:
    """New raw token ids and their natural-log probabilities."""

    ids: list[int]
    logprobs: list[float]


@dataclass
class TextDelta:
    text: str


@dataclass
class SeriesStep:
    """One forecast step: every path's value and the quantiles across paths."""

    step: int
    values: np.ndarray  # (num_samples,)
    median: float
    quantiles: dict[float, float]


@dataclass
class ImageStep:
    """A preview (rows_done < total_rows, later rows gray) or the final image."""

    image: np.ndarray  # uint8 (height, width, 3)
    rows_done: int
    total_rows: int
    final: bool

    def png(self) -> bytes:
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(self.image).save(buf, format="PNG")
        return buf.getvalue()


@dataclass
class AudioChunk:
    """New audio samples: `samples` (float32 mono) starting at sample `first_sample`."""

    samples: np.ndarray
    sample_rate: int
    first_sample: int
    frames: int  # codec frames in this chunk

    def pcm16(self) -> bytes:
        """Signed 16-bit little-endian PCM, the wire format."""
        from mmntp.data.audio import pcm16

        return pcm16(self.samples)


@dataclass
class Limits:
    """Service limits; requests past them get a ValueError naming the field."""

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
