"""Per-modality jobs: a validated request encoded for the engine, and the stream decoder
that turns its steps into chunks."""

from __future__ import annotations

from mmntp.api import AudioOutput, ImageOutput, TextOutput, TimeSeriesOutput, TokensOutput
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
    return job_type.build(ctx, request.parts, request.output, request.sampling)


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
