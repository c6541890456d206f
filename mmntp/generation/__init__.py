"""Generation: `Pipeline.from_pretrained(dir)`, the one validation step, and the
per-modality jobs that turn a request into engine requests and stream chunks."""

from mmntp.api import *  # noqa: F403 - the API's types come with the pipeline
from mmntp.api import __all__ as _api
from mmntp.generation.pipeline import Pipeline, default_service_dir
from mmntp.generation.validate import ValidRequest, validate

__all__ = [*_api, "Pipeline", "ValidRequest", "default_service_dir", "validate"]
