"""The one validation step on its own: defaults filled from the one table, field paths as
data, and linear-time checks of large requests (no model needed)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mmntp.api import (
    AudioOutput,
    FieldError,
    ImageOutput,
    Limits,
    SamplingParams,
    TextOutput,
    TimeSeriesOutput,
    TimeSeriesPart,
)
from mmntp.api.sampling import DEFAULTS, defaults, resolve
from mmntp.generation.validate import Capabilities, validate

CAPS = Capabilities(
    vocab_size=512,
    tokenizers=frozenset({"text", "timeseries", "audio", "image"}),
    image_heads=("vq", "flow"),
    limits=Limits(),
)
SERIES = TimeSeriesPart(np.sin(np.arange(64)))


@pytest.mark.parametrize("modality", sorted(DEFAULTS))
def test_a_seed_alone_keeps_the_modality_defaults(modality):
    """Pipeline(..., AudioOutput(), SamplingParams(seed=0)) used to drop the audio defaults."""
    got = resolve(SamplingParams(seed=7), modality)
    assert got == dataclasses.replace(defaults(modality), seed=7)
    assert got.temperature == DEFAULTS[modality].temperature
    assert got.top_k == DEFAULTS[modality].top_k


def test_validate_fills_audio_and_image_defaults_and_keeps_what_is_given():
    audio = validate("a sine tone at 440 Hz", AudioOutput(seconds=1), SamplingParams(seed=0), CAPS)
    assert (audio.sampling.temperature, audio.sampling.top_k) == (0.7, 20)
    assert audio.sampling.guidance_scale == 2.0 and audio.sampling.seed == 0
    image = validate("a red circle", ImageOutput(), SamplingParams(temperature=0.5), CAPS)
    assert image.sampling.temperature == 0.5 and image.sampling.guidance_scale == 1.5
    forecast = validate(SERIES, TimeSeriesOutput(horizon=4), None, CAPS)
    assert forecast.sampling.top_k == 50 and forecast.output.num_samples == 20


def test_defaults_are_capped_by_the_service_limits():
    caps = dataclasses.replace(CAPS, limits=Limits(max_output_tokens=100, timeseries_max_samples=5))
    assert validate("hi", TextOutput(), None, caps).output.max_tokens == 100
    assert validate(SERIES, TimeSeriesOutput(horizon=4), None, caps).output.num_samples == 5


@pytest.mark.parametrize(
    ("output", "sampling", "field"),
    [
        (TextOutput(), SamplingParams(guidance_scale=2.0), "sampling.guidance_scale"),
        (AudioOutput(), SamplingParams(num_steps=4), "sampling.num_steps"),
        (ImageOutput(head="diffusion"), None, "output.image.head"),
        (ImageOutput(width=-3), None, "output.image.width"),
        (AudioOutput(seconds=float("nan")), None, "output.audio.seconds"),
        (AudioOutput(chunk_frames=-1), None, "output.audio.chunk_frames"),
    ],
)
def test_errors_carry_the_field_path(output, sampling, field):
    prompt = "a red circle" if not isinstance(output, TextOutput) else "hi"
    with pytest.raises(FieldError) as err:
        validate(prompt, output, sampling, CAPS)
    assert err.value.field == field and str(err.value).startswith(field)


def test_a_missing_capability_names_the_output():
    caps = dataclasses.replace(CAPS, tokenizers=frozenset({"text"}), image_heads=())
    with pytest.raises(FieldError, match="cannot generate image") as err:
        validate("a red circle", ImageOutput(), None, caps)
    assert err.value.field == "output.image"


def test_many_quantiles_are_checked_in_n_log_n_and_name_the_duplicate():
    """80,000 distinct levels once froze the server for 41 s (a quadratic duplicate check);
    max_quantiles now refuses them first, and a service that raises it is still safe."""
    caps = dataclasses.replace(CAPS, limits=Limits(max_quantiles=100_000))
    levels = list(np.linspace(0.00001, 0.99999, 80_000))
    spec = TimeSeriesOutput(horizon=4, quantiles=levels)
    assert len(validate(SERIES, spec, None, caps).output.quantiles) == 80_000
    levels[70_000] = levels[10]
    with pytest.raises(FieldError, match="given twice") as err:
        validate(SERIES, TimeSeriesOutput(horizon=4, quantiles=levels), None, caps)
    assert err.value.field in (
        "output.timeseries.quantiles[10]",
        "output.timeseries.quantiles[70000]",
    )


def test_field_error_under_joins_paths():
    err = FieldError("values[3]", "is not finite").under("prompt[0].timeseries")
    assert err.field == "prompt[0].timeseries.values[3]"
    assert str(err) == "prompt[0].timeseries.values[3] is not finite"
    assert FieldError("[2]", "bad").under("prompt").field == "prompt[2]"
