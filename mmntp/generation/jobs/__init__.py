"""Per-modality jobs: a validated request encoded for the engine, and the stream decoder
that turns its steps into chunks."""

from __future__ import annotations

from mmntp.api import (
    AudioOutput,
    FieldError,
    ImageOutput,
    TextOutput,
    TimeSeriesOutput,
    TokensOutput,
)
from mmntp.generation.context import ModelContext
from mmntp.generation.jobs.audio import AudioJob
from mmntp.generation.jobs.base import Job
from mmntp.generation.jobs.forecast import ForecastJob
from mmntp.generation.jobs.image import ImageJob
from mmntp.generation.jobs.text import TextJob, TokensJob
from mmntp.generation.validate import ValidRequest

JOBS: dict[type, type[Job]] = {
    TextOutput: TextJob,
    TokensOutput: TokensJob,
    TimeSeriesOutput: ForecastJob,
    ImageOutput: ImageJob,
    AudioOutput: AudioJob,
}


def build_job(ctx: ModelContext, request: ValidRequest) -> Job:
    """Encode a validated request; only checks that need the tokenizers can still fail
    (FieldError naming the field)."""
    job_type = JOBS[type(request.output)]
    job = job_type.build(ctx, request.parts, request.output, request.sampling)
    longest = max(len(job.prompt_ids), len(job.uncond_ids or ()))
    if longest + job.segment.max_tokens > ctx.max_seq_len:
        raise FieldError(
            _LENGTH_FIELD.get(request.modality, "prompt"),
            f"the prompt ({longest} tokens) and the output ({job.segment.max_tokens} tokens) "
            f"exceed the model's context of {ctx.max_seq_len} tokens",
        )
    return job


# The field a too-long request names: what the caller can shorten.
_LENGTH_FIELD = {
    "text": "output.text.max_tokens",
    "tokens": "output.tokens.max_tokens",
    "timeseries": "output.timeseries.horizon",
}


__all__ = [
    "JOBS",
    "AudioJob",
    "ForecastJob",
    "ImageJob",
    "Job",
    "TextJob",
    "TokensJob",
    "build_job",
]
