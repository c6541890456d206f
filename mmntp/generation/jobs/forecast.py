"""Forecast jobs: sample paths of binned series values (one per forward), or of continuous
patches from the next-patch head (a patch of values per forward), summarised per step."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from mmntp.api import DEFAULT_QUANTILES, Forecast, GenerationOutput, SeriesChunk, TimeSeriesOutput
from mmntp.engine import PromptVector, Request, codes_plan, continuous_plan
from mmntp.format import sequence
from mmntp.generation.context import PATCH_HEAD, PATCH_MODALITY
from mmntp.generation.jobs.base import Job
from mmntp.tokenizers.series_patches import PatchState, SeriesPatcher


@dataclass
class ForecastJob(Job):
    state: dict = field(default_factory=dict)
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES

    @classmethod
    def build(cls, ctx, parts, output: TimeSeriesOutput, sampling):
        """`parts` is one validated series part; its most recent values are the context."""
        values = np.asarray(parts[0].values, dtype=np.float64)
        values = values[-ctx.limits.timeseries_context_length :]
        quantiles = tuple(output.quantiles)
        if output.head == PATCH_HEAD:
            return PatchForecastJob.from_context(ctx, values, output, sampling)
        tok = ctx.tokenizer("timeseries")
        ids, state = sequence.forecast_prompt(ctx.vocab, tok, values)
        span = sequence.series_span(ctx.vocab, tok)
        segment = codes_plan(output.horizon, [span], "timeseries")
        return cls(
            ctx, ids, segment, sampling, output.num_samples, state=state, quantiles=quantiles
        )

    def _values(self, ids: torch.Tensor) -> np.ndarray:
        start = self.ctx.vocab.range("timeseries").start
        return self.ctx.tokenizer("timeseries").decode(ids - start, self.state).numpy()

    def chunks(self, step, ids, lps, vectors=None):
        values = self._values(ids)  # (num_samples,)
        yield self._chunk(step, values)

    def _chunk(self, step: int, values: np.ndarray) -> SeriesChunk:
        """One step's summary over the sample paths' ``values`` (num_samples,)."""
        qs = np.quantile(values, self.quantiles)
        return SeriesChunk(
            step, float(np.median(values)), dict(zip(self.quantiles, qs.tolist())), values
        )

    def output(self, ids, lps, reason):
        return GenerationOutput("timeseries", ids, lps, reason)

    def finish(self, ids, lps, reasons):
        result = super().finish(ids, lps, reasons)
        samples = self._samples(ids)
        if samples.shape[1]:
            qs = np.quantile(samples, self.quantiles, axis=0)
            median = np.median(samples, axis=0)
            result.forecast = Forecast(samples, median, dict(zip(self.quantiles, qs)))
        return result

    def _samples(self, ids: torch.Tensor) -> np.ndarray:
        """Every path's values so far, (num_samples, steps)."""
        return self._values(ids) if ids.shape[1] else np.empty((ids.shape[0], 0))


@dataclass
class PatchForecastJob(ForecastJob):
    """The next-patch head: the context as standardised patches at prompt positions, then
    ``ceil(horizon / patch)`` continuous positions, each row one sample path. A step's
    vectors become ``patch`` per-step chunks; values past the horizon are dropped."""

    horizon: int = 0
    patch_state: PatchState | None = None
    patcher: SeriesPatcher | None = None
    vectors: list[torch.Tensor] = field(default_factory=list)  # prompt: one per patch
    where: list[int] = field(default_factory=list)  # the prompt positions they sit at
    paths: list[np.ndarray] = field(default_factory=list)  # per step: (num_samples, patch)

    @classmethod
    def from_context(cls, ctx, values: np.ndarray, output: TimeSeriesOutput, sampling):
        patcher = SeriesPatcher(ctx.patch_width())
        patches, state = patcher.encode(values)  # [P, patch]
        ids, where = sequence.patch_forecast_prompt(ctx.vocab, patches.shape[0])
        ids = ctx.checked_prompt(ids)
        steps = -(-output.horizon // patcher.patch)
        placeholder = ctx.vocab.special(sequence.LATENT_PLACEHOLDER)
        segment = continuous_plan(steps, PATCH_HEAD, placeholder, PATCH_MODALITY)
        job = cls(ctx, ids, segment, sampling, output.num_samples)
        job.quantiles, job.horizon, job.patch_state, job.patcher = (
            tuple(output.quantiles),
            output.horizon,
            state,
            patcher,
        )
        job.vectors = [torch.from_numpy(p) for p in patches]
        job.where = where
        return job

    def requests(self, *args, **kwargs) -> list[Request]:
        reqs = super().requests(*args, **kwargs)
        vectors = [PromptVector(p, PATCH_MODALITY, v) for p, v in zip(self.where, self.vectors)]
        for r in reqs:
            r.prompt_vectors = list(vectors)
        return reqs

    def chunks(self, step, ids, lps, vectors=None):
        patch = torch.stack([v.float() for v in vectors]).numpy()  # [num_samples, patch]
        values = self.patcher.decode(patch[:, None, :], self.patch_state)  # [rows, patch]
        self.paths.append(values)
        for j in range(values.shape[1]):
            k = step * self.patcher.patch + j
            if k < self.horizon:
                yield self._chunk(k, values[:, j])

    def _samples(self, ids: torch.Tensor) -> np.ndarray:
        if not self.paths:
            return np.empty((ids.shape[0], 0))
        return np.concatenate(self.paths, axis=1)[:, : self.horizon]
