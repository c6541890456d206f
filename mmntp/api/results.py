"""Results: a whole generation, a collected forecast, and a served model's description."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mmntp.api.chunks import Final


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
class ForecastResult:
    """A forecast collected from a stream: arrays shaped (steps,); `samples`
    (num_samples, steps) if asked."""

    median: np.ndarray
    quantiles: dict[float, np.ndarray]
    steps: int
    samples: np.ndarray | None = None
    final: Final | None = None


@dataclass
class ModelInfo:
    """One served model: modalities by name ("text", "timeseries", ...) and its limits."""

    name: str
    output_modalities: list[str]
    input_modalities: list[str]
    parameters: int
    max_seq_len: int
    vocab_size: int
    limits: dict[str, float] = field(default_factory=dict)
