"""Bounded requests: every list and string has a documented maximum checked before any
other work, the model's context is named as a request field, and CPU work on a request
runs off the server's event loop."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import numpy as np
import pytest
from serving import ServerThread

from mmntp.api import (
    AudioOutput,
    FieldError,
    Limits,
    SamplingParams,
    TextOutput,
    TextPart,
    TimeSeriesOutput,
    TimeSeriesPart,
    TokenIdsPart,
    TokensOutput,
)
from mmntp.client import Client
from mmntp.generation import Pipeline
from mmntp.generation.jobs import AudioJob, ForecastJob, ImageJob, TextJob, TokensJob
from mmntp.generation.pipeline import _off_loop
from mmntp.generation.validate import Capabilities, validate

LIMITS = Limits()
CAPS = Capabilities(512, frozenset({"text", "timeseries", "audio"}), ("vq",), LIMITS)
SERIES = TimeSeriesPart(np.sin(np.arange(64)))


@pytest.mark.parametrize(
    ("prompt", "output", "field", "limit"),
    [
        (["a"] * (LIMITS.max_prompt_parts + 1), TextOutput(), "prompt", "max_prompt_parts"),
        ("x" * (LIMITS.max_text_chars + 1), TextOutput(), "prompt[0].text", "max_text_chars"),
        (
            TokenIdsPart([1] * (LIMITS.max_prompt_tokens + 1)),
            TokensOutput(),
            "prompt[0].token_ids.ids",
            "max_prompt_tokens",
        ),
        (
            TimeSeriesPart(np.zeros(LIMITS.max_series_values + 1)),
            TimeSeriesOutput(horizon=4),
            "prompt[0].timeseries.values",
            "max_series_values",
        ),
        (
            SERIES,
            TimeSeriesOutput(horizon=4, quantiles=[0.5] * (LIMITS.max_quantiles + 1)),
            "output.timeseries.quantiles",
            "max_quantiles",
        ),
        (
            TokenIdsPart([1]),
            TokensOutput(stop_ids=[1] * (LIMITS.max_stop_ids + 1)),
            "output.tokens.stop_ids",
            "max_stop_ids",
        ),
    ],
)
def test_every_list_and_string_has_a_maximum(prompt, output, field, limit):
    with pytest.raises(FieldError, match=f"more than {limit} ") as err:
        validate(prompt, output, None, CAPS)
    assert err.value.field == field


def test_a_list_at_its_maximum_passes():
    spec = TimeSeriesOutput(horizon=4, quantiles=np.linspace(0.01, 0.99, LIMITS.max_quantiles))
    assert len(validate(SERIES, spec, None, CAPS).output.quantiles) == LIMITS.max_quantiles
    assert validate("x" * LIMITS.max_text_chars, TextOutput(), None, CAPS).parts[0].text


def test_steps_are_refused_for_audio_without_contradicting_itself():
    with pytest.raises(FieldError) as err:
        validate("a sine tone", AudioOutput(), SamplingParams(num_steps=4), CAPS)
    assert err.value.field == "sampling.num_steps"
    assert str(err.value) == "sampling.num_steps applies to image outputs only, not audio"


def test_advertised_limits_fit_the_model_and_the_context_is_a_request_field(tiny_model_dir):
    pipe = Pipeline.from_pretrained(tiny_model_dir)
    context = pipe.bundle.model.config.max_seq_len
    info = pipe.model_info()
    assert info.limits["max_prompt_tokens"] < context
    assert info.limits["max_output_tokens"] < context
    long_prompt = TokenIdsPart([5] * (context - 8))
    with pytest.raises(FieldError, match="exceed the model's context") as err:
        pipe(long_prompt, TokensOutput(max_tokens=16))
    assert err.value.field == "output.tokens.max_tokens"
    assert len(pipe(long_prompt, TokensOutput(max_tokens=8)).token_ids) == 8


def test_only_image_and_audio_jobs_decode_off_the_loop():
    assert ImageJob.heavy_decode and AudioJob.heavy_decode
    assert not any(j.heavy_decode for j in (TextJob, TokensJob, ForecastJob))

    async def where(heavy: bool) -> threading.Thread:
        job = dataclasses.make_dataclass("J", [])()
        job.heavy_decode = heavy
        return await _off_loop(job, threading.current_thread)

    loop_thread = threading.current_thread()
    assert asyncio.run(where(False)) is loop_thread
    assert asyncio.run(where(True)) is not loop_thread


def test_the_server_validates_off_its_event_loop(tiny_model_dir, monkeypatch):
    pipe = Pipeline.from_pretrained(tiny_model_dir)
    seen: list[threading.Thread] = []
    validate_on = pipe.validate

    def recording(*args, **kwargs):
        seen.append(threading.current_thread())
        return validate_on(*args, **kwargs)

    monkeypatch.setattr(pipe, "validate", recording)
    with ServerThread(pipe) as server, Client(server.target, timeout=60) as client:
        list(client.generate(TextPart("hi"), TextOutput(max_tokens=2), SamplingParams(seed=0)))
        assert seen and all(t is not server.thread for t in seen)
