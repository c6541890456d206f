"""Forecast jobs: sample paths of binned series values, summarised per step."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from mmntp.api import DEFAULT_QUANTILES, Forecast, GenerationOutput, SeriesChunk, TimeSeriesOutput
from mmntp.engine import codes_plan
from mmntp.format import sequence
from mmntp.generation.jobs.base import Job


@dataclass
class ForecastJob(Job):
    state: dict = field(default_factory=dict)
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES

    @classmethod
    def build(cls, ctx, parts, output: TimeSeriesOutput, sampling):
        """`parts` is one validated series part; its most recent values are the context."""
        values = np.asarray(parts[0].values, dtype=np.float64)
        values = values[-ctx.limits.timeseries_context_length :]
        tok = ctx.tokenizer("timeseries")
        ids, state = sequence.forecast_prompt(ctx.vocab, tok, values)
        span = sequence.series_span(ctx.vocab, tok)
        segment = codes_plan(output.horizon, [span], "timeseries")
        quantiles = tuple(output.quantiles)
        return cls(
            ctx, ids, segment, sampling, output.num_samples, state=state, quantiles=quantiles
        )

    def _values(self, ids: torch.Tensor) -> np.ndarray:
        start = self.ctx.vocab.range("timeseries").start
        return self.ctx.tokenizer("timeseries").decode(ids - start, self.state).numpy()

    def chunks(self, step, ids, lps, vectors=None):
        values = self._values(ids)  # (num_samples,)
        qs = np.quantile(values, self.quantiles)
        yield SeriesChunk(
            step, float(np.median(values)), dict(zip(self.quantiles, qs.tolist())), values
        )

    def output(self, ids, lps, reason):
        return GenerationOutput("timeseries", ids, lps, reason)

    def finish(self, ids, lps, reasons):
        result = super().finish(ids, lps, reasons)
        if ids.shape[1]:
            samples = self._values(ids)  # (num_samples, steps)
            qs = np.quantile(samples, self.quantiles, axis=0)
            median = np.median(samples, axis=0)
            result.forecast = Forecast(samples, median, dict(zip(self.quantiles, qs)))
        return result
