"""Jobs: a validated request (prompt parts + output spec + sampling) ready for the engine.

A job knows its prompt ids, its segment plan and how many rows (sample paths) it runs;
it turns engine requests' step outputs into user-facing chunks and the final result.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from mmntp import sequence
from mmntp.engine import (
    Request,
    SegmentPlan,
    codes_plan,
    continuous_plan,
    free_plan,
    text_plan,
)
from mmntp.model.sampling import SamplingParams
from mmntp.schema import (
    AUDIO_SAMPLING,
    DEFAULT_QUANTILES,
    FORECAST_SAMPLING,
    IMAGE_SAMPLING,
    AudioOutput,
    Forecast,
    GenerationOutput,
    ImageOutput,
    ImageStep,
    PromptPart,
    SeriesStep,
    TextDelta,
    TextOutput,
    TextPart,
    TimeSeriesOutput,
    TimeSeriesPart,
    TokenIdsPart,
    TokensDelta,
    TokensOutput,
)


def build_job(pipe, prompt, output, sampling) -> Job:
    """Validate and encode one request; raises ValueError naming the field."""
    parts = as_parts(prompt)
    output = output or TextOutput()
    if isinstance(output, TimeSeriesOutput):
        return ForecastJob.build(pipe, parts, output, sampling or FORECAST_SAMPLING)
    if isinstance(output, TokensOutput):
        return TokensJob.build(pipe, parts, output, sampling or SamplingParams())
    if isinstance(output, TextOutput):
        return TextJob.build(pipe, parts, output, sampling or SamplingParams())
    if isinstance(output, ImageOutput):
        return ImageJob.build(pipe, parts, output, sampling or IMAGE_SAMPLING)
    if isinstance(output, AudioOutput):
        from mmntp.audio_job import AudioJob

        return AudioJob.build(pipe, parts, output, sampling or AUDIO_SAMPLING)
    raise ValueError(f"output: unknown output spec {type(output).__name__}")


def as_parts(prompt) -> list[PromptPart]:
    if isinstance(prompt, str):
        return [TextPart(prompt)]
    if isinstance(prompt, (TextPart, TokenIdsPart, TimeSeriesPart)):
        return [prompt]
    if not isinstance(prompt, (list, tuple)):
        raise ValueError(f"prompt: unsupported prompt part {type(prompt).__name__}")
    parts = list(prompt)
    for i, part in enumerate(parts):
        if isinstance(part, str):
            parts[i] = TextPart(part)
        elif not isinstance(part, (TextPart, TokenIdsPart, TimeSeriesPart)):
            raise ValueError(f"prompt[{i}]: unsupported prompt part {type(part).__name__}")
    return parts


def check_ids(ids: Sequence[int], vocab_size: int) -> list[int]:
    out = [int(i) for i in ids]
    bad = [i for i in out if not 0 <= i < vocab_size]
    if bad:
        raise ValueError(f"prompt ids must lie in [0, {vocab_size}), got {bad[:5]}")
    return out


@dataclass
class Job:
    pipe: Any  # the Pipeline: vocab, tokenizers, limits
    prompt_ids: list[int]
    segment: SegmentPlan
    sampling: SamplingParams
    rows: int = 1
    uncond_ids: list[int] | None = None  # classifier-free guidance: the unconditional prompt

    def requests(
        self, tag: str | None = None, priority: int = 0, deadline: float | None = None
    ) -> list[Request]:
        """One engine request per row; rows get independent seeds derived from the request's."""
        tag = tag or uuid.uuid4().hex
        if self.rows == 1:
            seeds = [self.sampling.seed]
        else:
            base = self.sampling.seed if self.sampling.seed is not None else uuid.uuid4().int >> 65
            state = np.random.SeedSequence(base).generate_state(self.rows, np.uint64)
            seeds = [int(s) for s in state >> np.uint64(1)]
        return [
            Request(
                f"{tag}-{i}",
                self.prompt_ids,
                self.segment,
                replace(self.sampling, seed=seed),
                priority=priority,
                deadline=deadline,
                uncond_prompt_ids=self.uncond_ids,
            )
            for i, seed in enumerate(seeds)
        ]

    def chunks(
        self,
        step: int,
        ids: torch.Tensor,
        lps: torch.Tensor,
        vectors: list[torch.Tensor | None] | None = None,
    ) -> Iterator:
        """User-facing chunks for output step `step` (ids/logprobs of every row [rows]; for a
        continuous step, each row's vector)."""
        return iter(())

    def flush(self) -> Iterator:
        return iter(())

    def finish(
        self, ids: torch.Tensor, lps: torch.Tensor, reasons: Sequence[str]
    ) -> GenerationOutput:
        """The result from every row's ids/logprobs [rows, T] and each row's finish reason."""
        result = self.output(ids[0].tolist(), lps[0].tolist(), _overall(reasons))
        result.prompt_tokens = len(self.prompt_ids)
        result.output_tokens = int(ids.numel())
        return result

    def output(self, ids: list[int], lps: list[float], reason: str) -> GenerationOutput:
        return GenerationOutput("tokens", ids, lps, reason)


@dataclass
class TokensJob(Job):
    def chunks(self, step, ids, lps, vectors=None):
        yield TokensDelta([int(ids[0])], [float(lps[0])])

    @classmethod
    def build(cls, pipe, parts, output: TokensOutput, sampling):
        ids = pipe.prompt_ids(parts)
        stops = tuple(check_ids(output.stop_ids, pipe.vocab.size))
        return cls(pipe, ids, free_plan(pipe.check_max_tokens(output.max_tokens), stops), sampling)


@dataclass
class TextJob(Job):
    decoder: Any = None

    @classmethod
    def build(cls, pipe, parts, output: TextOutput, sampling):
        vocab = pipe.vocab
        text = vocab.range("text")
        segment = text_plan(
            pipe.check_max_tokens(output.max_tokens),
            (text.start, text.stop),
            vocab.special("<eos>"),
        )
        plan = cls(pipe, pipe.prompt_ids(parts), segment, sampling)
        plan.decoder = pipe.tokenizer("text").stream_decoder()
        return plan

    def _local(self, ids: list[int]) -> torch.Tensor:
        start = self.pipe.vocab.range("text").start
        stops = self.segment.stop_ids
        return torch.tensor([i - start for i in ids if i not in stops], dtype=torch.long)

    def chunks(self, step, ids, lps, vectors=None):
        delta = self.decoder.push(self._local(ids[:1].tolist()))
        if delta:
            yield TextDelta(delta)

    def flush(self):
        rest = self.decoder.flush()
        if rest:
            yield TextDelta(rest)

    def output(self, ids, lps, reason):
        text = self.pipe.tokenizer("text").decode(self._local(ids))
        return GenerationOutput("text", ids, lps, reason, text=text)


@dataclass
class ForecastJob(Job):
    state: dict = field(default_factory=dict)
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES

    @classmethod
    def build(cls, pipe, parts, output: TimeSeriesOutput, sampling):
        limits = pipe.limits
        series = [p for p in parts if isinstance(p, TimeSeriesPart)]
        if len(series) != 1 or len(parts) != 1:
            raise ValueError("prompt: forecasting takes exactly one time-series part")
        _check_range("horizon", output.horizon, 1, limits.timeseries_max_horizon)
        _check_range("num_samples", output.num_samples, 1, limits.timeseries_max_samples)
        quantiles = tuple(sorted(float(q) for q in output.quantiles))
        if not quantiles or not all(0.0 < q < 1.0 for q in quantiles):
            raise ValueError(f"quantiles must lie strictly between 0 and 1, got {quantiles}")
        values = np.asarray(series[0].values, dtype=np.float64)
        values = values[-limits.timeseries_context_length :]
        observed = int(np.isfinite(values).sum()) if values.ndim == 1 else 0
        if values.ndim != 1 or observed < limits.timeseries_min_context:
            raise ValueError(
                f"context has {observed} observed values; at least "
                f"{limits.timeseries_min_context} are needed"
            )
        tok = pipe.tokenizer("timeseries")
        ids, state = sequence.forecast_prompt(pipe.vocab, tok, values)
        span = sequence.series_span(pipe.vocab, tok)
        segment = codes_plan(output.horizon, [span], "timeseries")
        return cls(
            pipe, ids, segment, sampling, output.num_samples, state=state, quantiles=quantiles
        )

    def _values(self, ids: torch.Tensor) -> np.ndarray:
        start = self.pipe.vocab.range("timeseries").start
        return self.pipe.tokenizer("timeseries").decode(ids - start, self.state).numpy()

    def chunks(self, step, ids, lps, vectors=None):
        values = self._values(ids)  # (num_samples,)
        qs = np.quantile(values, self.quantiles)
        yield SeriesStep(
            step, values, float(np.median(values)), dict(zip(self.quantiles, qs.tolist()))
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


@dataclass
class ImageJob(Job):
    """Text-to-image, guided by default: VQ codes in raster order (head "vq"), or KL latents
    in k x k cells from a flow or diffusion head (continuous positions, next-X)."""

    size: tuple[int, int] = (0, 0)  # output (width, height)
    grid: tuple[int, int] = (1, 1)  # token (or latent) rows, columns
    every: int = 2  # preview every this many token rows
    decoder: Any = None
    final: np.ndarray | None = None
    cells: int = 0  # k of the k x k latent cells; 0 = VQ codes
    pending: list = field(default_factory=list)  # cells of the cell row in progress

    @classmethod
    def build(cls, pipe, parts, output: ImageOutput, sampling):
        heads = image_heads(pipe)
        if output.head not in heads:
            raise ValueError(
                f"output.image.head: {output.head!r} is not available on this model "
                f"(heads: {', '.join(heads) or 'none'})"
            )
        caption = caption_of(parts, "image")
        text, vocab = pipe.tokenizer("text"), pipe.vocab
        ids = pipe.prompt_ids_checked(sequence.image_prompt(vocab, text, caption))
        if output.head == "vq":
            tok = pipe.tokenizer("image")
            start = vocab.range("image").start
            lo, hi = tok.sample_range
            segment = codes_plan(tok.num_tokens, [(start + lo, start + hi)], "image")
            cells = 0
        else:
            tok = pipe.tokenizer(LATENT_TOKENIZER)
            cells = math.isqrt(pipe.bundle.model.heads[output.head].width // tok.latent_dim)
            positions = tok.num_tokens // (cells * cells)
            placeholder = vocab.special(sequence.LATENT_PLACEHOLDER)
            segment = continuous_plan(positions, output.head, placeholder, "image")
        sampling, uncond = guided_sampling(
            sampling, IMAGE_SAMPLING, lambda: sequence.image_prompt(vocab, text, None)
        )
        size = _image_size(output, tok.image_size, pipe.limits.max_image_pixels)
        every = output.preview_every_rows or 2
        if every < 1:
            raise ValueError(f"preview_every_rows must be >= 0, got {output.preview_every_rows}")
        job = cls(pipe, ids, segment, sampling, uncond_ids=uncond, size=size, every=every)
        job.grid, job.cells = tuple(tok.grid), cells
        job.decoder = tok.stream_decoder()
        return job

    def _pixels(self, image: torch.Tensor) -> np.ndarray:
        """float [3, S, S] in [0, 1] -> uint8 (height, width, 3) at the requested size."""
        from PIL import Image

        array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        if array.shape[1::-1] == self.size:
            return array
        return np.asarray(Image.fromarray(array).resize(self.size, Image.Resampling.BICUBIC))

    def chunks(self, step, ids, lps, vectors=None):
        rows, cols = self.grid
        if self.cells:
            preview, done = self._push_cell(vectors[0]), (step + 1) // (cols // self.cells)
            done *= self.cells  # latent rows
        else:
            preview = self.decoder.push(ids[:1] - self.pipe.vocab.range("image").start)
            done = (step + 1) // cols
        if preview is not None and done < rows and done % self.every == 0:
            yield ImageStep(self._pixels(preview), done, rows, False)

    def _push_cell(self, cell: torch.Tensor):
        """Cells wait until their cell row is complete, then go in as k latent rows."""
        self.pending.append(cell.float().cpu())
        k, cols = self.cells, self.grid[1]
        if len(self.pending) < cols // k:
            return None
        row = sequence.from_cells(torch.stack(self.pending), (k, cols), k)  # [k * cols, C]
        self.pending = []
        return self.decoder.push(row)

    def flush(self):
        rows = self.grid[0]
        self.final = self._pixels(self.decoder.flush())
        yield ImageStep(self.final, rows, rows, True)

    def output(self, ids, lps, reason):
        return GenerationOutput("image", ids, lps, reason, image=self.final)


LATENT_TOKENIZER = "image_latent"  # the model folder's key of its KL image tokenizer


def image_heads(pipe) -> list[str]:
    """Image heads this model has: "vq" with a VQ tokenizer, flow / diffusion heads with a
    KL tokenizer."""
    heads = ["vq"] if "image" in pipe.bundle.tokenizers else []
    if LATENT_TOKENIZER in pipe.bundle.tokenizers:
        model_heads = pipe.bundle.model.heads
        heads += [h for h in ("flow", "diffusion") if h in model_heads]
    return heads


def guided_sampling(sampling: SamplingParams, defaults: SamplingParams, uncond_prompt):
    """(sampling with the default guidance scale filled in, the unconditional prompt ids
    or None): scale 1 is the conditional row alone, so it needs no shadow row."""
    if sampling.guidance_scale is None:
        sampling = replace(sampling, guidance_scale=defaults.guidance_scale)
    return sampling, (uncond_prompt() if sampling.guidance_scale != 1.0 else None)


def caption_of(parts: Sequence[PromptPart], what: str) -> str:
    """The one non-empty text part of a text-to-image/audio prompt."""
    if len(parts) != 1 or not isinstance(parts[0], TextPart) or not parts[0].text.strip():
        raise ValueError(f"prompt: an {what} prompt is one non-empty text part, its caption")
    return parts[0].text


def _image_size(output: ImageOutput, native: int, max_pixels: int) -> tuple[int, int]:
    width, height = output.width or native, output.height or native
    for name, value in (("width", output.width), ("height", output.height)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"output.image.{name} must be an integer >= 0, got {value!r}")
    if width * height > max_pixels:
        raise ValueError(f"output.image: {width}x{height} exceeds max_image_pixels {max_pixels}")
    return width, height


def _check_range(name: str, value: int, lo: int, hi: int) -> None:
    if not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")


def _overall(reasons: Sequence[str]) -> str:
    """One finish reason for all rows: an abnormal end wins, then stop, then length."""
    for reason in ("deadline", "abort", "stop"):
        if reason in reasons:
            return reason
    return "length"
