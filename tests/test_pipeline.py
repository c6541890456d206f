"""Pipeline API: one call and its streaming variant agree; bad requests name the field."""

import asyncio
import json

import numpy as np
import pytest
import torch

from mmntp.api import FieldError, SamplingParams
from mmntp.generation import (
    GenerationOutput,
    Pipeline,
    SeriesChunk,
    TextChunk,
    TextOutput,
    TimeSeriesOutput,
    TimeSeriesPart,
    TokenIdsPart,
    TokensOutput,
)
from mmntp.model.reference import generate_reference


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return Pipeline.from_pretrained(tiny_model_dir)


def _series(n=96):
    t = np.arange(n)
    return 50 + 10 * np.sin(2 * np.pi * t / 12) + 0.1 * t


def test_tokens_equal_reference_loop(pipe):
    out = pipe(TokenIdsPart([5, 17, 42]), TokensOutput(max_tokens=8), SamplingParams(temperature=0))
    ref = generate_reference(pipe.bundle.model, [5, 17, 42], 8, SamplingParams(temperature=0))
    assert out.token_ids == ref.token_ids[0]
    assert out.logprobs == pytest.approx(ref.logprobs[0])


def test_text_stream_equals_one_shot(pipe):
    params = SamplingParams(temperature=1.0, seed=7)
    one = pipe("Hello", TextOutput(max_tokens=40), params)
    chunks = list(pipe.stream("Hello", TextOutput(max_tokens=40), params))
    final = chunks[-1]
    assert isinstance(final, GenerationOutput)
    assert final.token_ids == one.token_ids and final.text == one.text
    streamed = "".join(c.text for c in chunks if isinstance(c, TextChunk))
    assert streamed == one.text
    text_range = pipe.vocab.range("text")
    eos = pipe.vocab.special("<eos>")
    assert all(text_range.start <= t < text_range.stop or t == eos for t in one.token_ids)


def test_forecast_shapes_quantiles_and_stream(pipe):
    params = SamplingParams(temperature=1.0, top_k=50, seed=3)
    spec = TimeSeriesOutput(horizon=12, num_samples=16)
    out = pipe(TimeSeriesPart(_series()), spec, params)
    fc = out.forecast
    assert fc.samples.shape == (16, 12) and fc.median.shape == (12,)
    qs = np.stack([fc.quantiles[q] for q in sorted(fc.quantiles)])
    assert qs.shape == (9, 12) and np.all(np.diff(qs, axis=0) >= 0)  # monotone per step
    assert np.all(np.isfinite(fc.samples))
    # every sampled value is a bin centre times the context scale, within the ±15 range
    scale = np.nanmean(np.abs(_series()))
    assert np.all(np.abs(fc.samples) <= 15 * scale + 1e-6)

    chunks = list(pipe.stream(TimeSeriesPart(_series()), spec, params))
    steps = [c for c in chunks if isinstance(c, SeriesChunk)]
    assert [s.step for s in steps] == list(range(12))
    np.testing.assert_allclose(np.stack([s.samples for s in steps], 1), fc.samples)
    np.testing.assert_allclose([s.quantiles[0.9] for s in steps], fc.quantiles[0.9])
    np.testing.assert_allclose(chunks[-1].forecast.median, fc.median)


def test_forecast_context_with_missing_values(pipe):
    values = _series()
    values[[3, 10, 40]] = np.nan
    out = pipe(
        TimeSeriesPart(values), TimeSeriesOutput(horizon=4, num_samples=5), SamplingParams(seed=0)
    )
    assert out.forecast.samples.shape == (5, 4)


@pytest.mark.parametrize(
    ("prompt", "spec", "field", "message"),
    [
        (
            TimeSeriesPart(_series()),
            TimeSeriesOutput(horizon=33),
            "output.timeseries.horizon",
            r"horizon must be an integer in \[1, 32\]",
        ),
        (
            TimeSeriesPart(_series()),
            TimeSeriesOutput(horizon=0),
            "output.timeseries.horizon",
            "must be",
        ),
        (
            TimeSeriesPart(_series()),
            TimeSeriesOutput(horizon=4, num_samples=0),
            "output.timeseries.num_samples",
            "num_samples must be",
        ),
        (
            TimeSeriesPart(_series()),
            TimeSeriesOutput(horizon=4, quantiles=(0.5, 1.0)),
            "output.timeseries.quantiles[1]",
            r"must lie strictly in \(0, 1\)",
        ),
        (
            TimeSeriesPart(_series()),
            TimeSeriesOutput(horizon=4, quantiles=(0.5, 0.2, 0.5)),
            "output.timeseries.quantiles[2]",
            "level 0.5 is given twice",
        ),
        (
            TimeSeriesPart([1.0, 2.0, 3.0]),
            TimeSeriesOutput(horizon=4),
            "prompt[0].timeseries",
            "context has 3 observed values; at least 8",
        ),
        (
            TimeSeriesPart([np.nan] * 20),
            TimeSeriesOutput(horizon=4),
            "prompt[0].timeseries.values",
            "every value is NaN",
        ),
        (
            TimeSeriesPart([1.0] * 10 + [np.inf]),
            TimeSeriesOutput(horizon=4),
            "prompt[0].timeseries.values[10]",
            "inf",
        ),
        (
            [TimeSeriesPart(_series()), "hi"],
            TimeSeriesOutput(horizon=4),
            "prompt",
            "a forecast takes exactly one timeseries part",
        ),
        (
            TokenIdsPart([1, 99999]),
            TokensOutput(),
            "prompt[0].token_ids.ids[1]",
            r"outside the vocabulary \[0, ",
        ),
        (TokenIdsPart([]), TokensOutput(), "prompt", "empty prompt"),
        ("hi", TextOutput(max_tokens=0), "output.text.max_tokens", "must be an integer in"),
        ("hi", TextOutput(max_tokens=5000), "output.text.max_tokens", "must be an integer in"),
        (
            TimeSeriesPart(_series()),
            TextOutput(),
            "prompt[0].timeseries",
            "can only be forecast",
        ),
        (42, TextOutput(), "prompt", "unsupported prompt part int"),
        ("hi", TextOutput(), "sampling.guidance_scale", "applies to image"),
    ],
)
def test_bad_requests_name_the_problem(pipe, prompt, spec, field, message):
    """The one validation step: every error carries its field path as data."""
    sampling = SamplingParams(guidance_scale=2.0) if field.startswith("sampling") else None
    with pytest.raises(FieldError, match=message) as err:
        pipe(prompt, spec, sampling)
    assert err.value.field == field
    assert str(err.value).startswith(field)


def test_long_context_keeps_most_recent_values(pipe):
    long = _series(400)
    spec, params = TimeSeriesOutput(horizon=3, num_samples=2), SamplingParams(seed=1)
    a = pipe(TimeSeriesPart(long), spec, params)
    b = pipe(TimeSeriesPart(long[-128:]), spec, params)  # the fixture's context_length
    np.testing.assert_allclose(a.forecast.samples, b.forecast.samples)


def test_service_folder_overrides_limits(tiny_model_dir, tmp_path):
    service = tmp_path / "svc"
    service.mkdir()
    (service / "service.json").write_text(
        json.dumps({"model": str(tiny_model_dir), "limits": {"timeseries_max_horizon": 5}})
    )
    pipe = Pipeline.from_pretrained(service)
    assert pipe.limits.timeseries_max_horizon == 5
    with pytest.raises(ValueError, match=r"\[1, 5\]"):
        pipe(TimeSeriesPart(_series()), TimeSeriesOutput(horizon=6))
    (service / "service.json").write_text(
        json.dumps({"model": str(tiny_model_dir), "limits": {"bogus": 1}})
    )
    with pytest.raises(ValueError, match="unknown limits"):
        Pipeline.from_pretrained(service)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Pipeline.from_pretrained(tmp_path / "missing")


def test_model_folder_round_trip(tiny_model_dir, pipe):
    from mmntp.model.checkpoint import load_model, save_model

    again_dir = tiny_model_dir.parent / "again"
    b = pipe.bundle
    save_model(again_dir, b.model, b.vocab, b.tokenizers, b.meta)
    again = load_model(again_dir)
    for (k1, v1), (k2, v2) in zip(b.model.state_dict().items(), again.model.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    assert again.vocab.to_dict() == b.vocab.to_dict()
    assert set(again.tokenizers) == {"text", "timeseries"}
    assert not any(p.suffix in {".pt", ".bin", ".pkl"} for p in again_dir.rglob("*"))


def test_async_stream_equals_sync_and_cancels_cleanly(tiny_model_dir):

    spec, params = TimeSeriesOutput(horizon=6, num_samples=4), SamplingParams(seed=11)
    sync_pipe = Pipeline.from_pretrained(tiny_model_dir)
    expected = sync_pipe(TimeSeriesPart(_series()), spec, params)

    async def main():
        pipe = Pipeline.from_pretrained(tiny_model_dir)
        chunks = [c async for c in pipe.astream(TimeSeriesPart(_series()), spec, params)]
        steps = [c for c in chunks if isinstance(c, SeriesChunk)]
        assert len(steps) == 6
        np.testing.assert_allclose(chunks[-1].forecast.samples, expected.forecast.samples)
        assert chunks[-1].output_tokens == 24 and chunks[-1].prompt_tokens > 0
        # closing the stream early aborts every row and frees the cache
        before = pipe.engine.kv.usage
        stream = pipe.astream("Hello", TextOutput(max_tokens=500), SamplingParams(seed=1))
        async for chunk in stream:
            if isinstance(chunk, TextChunk):
                break
        await stream.aclose()
        for _ in range(200):
            await asyncio.sleep(0.01)
            if not pipe.engine.has_unfinished():
                break
        assert pipe.engine.kv.usage == before and pipe.engine.scheduler.num_running == 0
        with pytest.raises(ValueError, match="horizon must be"):
            async for _ in pipe.astream(TimeSeriesPart(_series()), TimeSeriesOutput(horizon=0)):
                pass
        await pipe.async_engine.stop()

    asyncio.run(main())


def test_tokens_stream_deltas_equal_one_shot(pipe):
    from mmntp.generation import TokensChunk

    params = SamplingParams(temperature=0.8, seed=2)
    one = pipe(TokenIdsPart([3, 4, 5]), TokensOutput(max_tokens=9), params)
    deltas = [
        c
        for c in pipe.stream(TokenIdsPart([3, 4, 5]), TokensOutput(max_tokens=9), params)
        if isinstance(c, TokensChunk)
    ]
    assert [i for d in deltas for i in d.ids] == one.token_ids
    assert [x for d in deltas for x in d.logprobs] == pytest.approx(one.logprobs)


def test_a_slow_async_consumer_gets_every_token(tiny_model_dir):
    """The engine may finish while the consumer sits in a yield: no tail is dropped."""
    from mmntp.generation import TokensChunk

    async def main():
        pipe = Pipeline.from_pretrained(tiny_model_dir)
        got, final = [], None
        stream = pipe.astream(
            TokenIdsPart([3, 4, 5]), TokensOutput(max_tokens=40), SamplingParams(seed=3)
        )
        async for chunk in stream:
            if isinstance(chunk, TokensChunk):
                got.extend(chunk.ids)
                await asyncio.sleep(0.05)  # the engine runs ahead meanwhile
            else:
                final = chunk
        await pipe.async_engine.stop()
        return got, final

    got, final = asyncio.run(main())
    assert final.output_tokens == 40 and len(got) == 40
