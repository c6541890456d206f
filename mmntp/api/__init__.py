"""The user-facing contract: prompt parts, output specs, sampling parameters with each
modality's defaults, results and stream chunks, limits and field errors.

Imports no torch: the light client SDK and every layer above the model use it.
"""

from mmntp.api.chunks import (
    AudioChunk,
    Chunk,
    Final,
    ImageChunk,
    MotionChunk,
    SeriesChunk,
    TextChunk,
    TokensChunk,
)
from mmntp.api.errors import FieldError
from mmntp.api.limits import Limits
from mmntp.api.outputs import (
    DEFAULT_NUM_SAMPLES,
    DEFAULT_QUANTILES,
    MODALITY_OF,
    AudioOutput,
    ImageOutput,
    MotionOutput,
    OutputSpec,
    TextOutput,
    TimeSeriesOutput,
    TokensOutput,
)
from mmntp.api.parts import (
    AudioPart,
    ImagePart,
    MotionPart,
    PromptPart,
    TextPart,
    TimeSeriesPart,
    TokenIdsPart,
    as_parts,
)
from mmntp.api.results import Forecast, ForecastResult, GenerationOutput, ModelInfo
from mmntp.api.sampling import SamplingParams

__all__ = [
    "DEFAULT_NUM_SAMPLES",
    "DEFAULT_QUANTILES",
    "MODALITY_OF",
    "AudioChunk",
    "AudioOutput",
    "AudioPart",
    "Chunk",
    "FieldError",
    "Final",
    "Forecast",
    "ForecastResult",
    "GenerationOutput",
    "ImageChunk",
    "ImageOutput",
    "ImagePart",
    "Limits",
    "ModelInfo",
    "MotionChunk",
    "MotionOutput",
    "MotionPart",
    "OutputSpec",
    "PromptPart",
    "SamplingParams",
    "SeriesChunk",
    "TextChunk",
    "TextOutput",
    "TextPart",
    "TimeSeriesOutput",
    "TimeSeriesPart",
    "TokenIdsPart",
    "TokensChunk",
    "TokensOutput",
    "as_parts",
]
