"""Output specs: what a request asks the model to produce."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_NUM_SAMPLES = 20  # forecast sample paths
DEFAULT_TEXT_TOKENS = 256
DEFAULT_RAW_TOKENS = 16


@dataclass
class TextOutput:
    max_tokens: int | None = None  # None: DEFAULT_TEXT_TOKENS, capped by the service's limit


@dataclass
class TokensOutput:
    """Unconstrained ids after a raw-id prompt (for tests and model debugging)."""

    max_tokens: int | None = None  # None: DEFAULT_RAW_TOKENS, capped by the service's limit
    stop_ids: Sequence[int] = ()


@dataclass
class TimeSeriesOutput:
    """A forecast of `horizon` steps from `num_samples` sample paths, summarised at
    `quantiles`; `head` "tokens" samples binned values one per forward, "patch" (models
    that have it) samples 16 continuous values per forward from the next-patch head."""

    horizon: int
    num_samples: int | None = None  # None: DEFAULT_NUM_SAMPLES, capped by the service's limit
    quantiles: Sequence[float] = DEFAULT_QUANTILES
    head: str | None = None  # None: the model's default, "tokens" where it has them


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
    False samples the same frames flattened, one token per forward through the token head
    (the baseline the frame head is measured against).
    """

    seconds: float = 1.0
    first_chunk_frames: int = 0
    chunk_frames: int = 0
    frame_head: bool = True


@dataclass
class MotionOutput:
    frames: int


OutputSpec = TextOutput | TokensOutput | TimeSeriesOutput | ImageOutput | AudioOutput | MotionOutput

# The modality each output spec produces (the key of the sampling defaults and of the
# proto's OutputSpec oneof).
MODALITY_OF: dict[type, str] = {
    TextOutput: "text",
    TokensOutput: "tokens",
    TimeSeriesOutput: "timeseries",
    ImageOutput: "image",
    AudioOutput: "audio",
    MotionOutput: "motion",
}
