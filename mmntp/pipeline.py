"""`Pipeline.from_pretrained(dir)`: prompt parts + an output spec -> a result dataclass.

The one user-facing API: the CLI, the service and batch jobs all go through it.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmntp import sequence
from mmntp.engine import (
    Engine,
    EngineConfig,
    Request,
    SegmentPlan,
    codes_plan,
    free_plan,
    text_plan,
)
from mmntp.model.checkpoint import ModelBundle, load_model
from mmntp.model.sampling import SamplingParams

DEFAULT_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# Chronos' sampling defaults for forecasting: plain temperature 1 with top-k 50.
FORECAST_SAMPLING = SamplingParams(temperature=1.0, top_k=50)


# -- prompt parts ---------------------------------------------------------------------


@dataclass
class TextPart:
    text: str


@dataclass
class TokenIdsPart:
    """Raw global ids, passed to the model unchanged (no <bos> added)."""

    ids: Sequence[int]


@dataclass
class TimeSeriesPart:
    """A univariate history, shaped (time_length,); NaN marks a missing value."""

    values: Sequence[float] | np.ndarray
    timestamps: Sequence[str] | None = None


PromptPart = TextPart | TokenIdsPart | TimeSeriesPart


# -- output specs -------------------------------------------------------------------


@dataclass
class TextOutput:
    max_tokens: int = 256


@dataclass
class TokensOutput:
    """Unconstrained ids after a raw-id prompt (for tests and model debugging)."""

    max_tokens: int = 16
    stop_ids: Sequence[int] = ()


@dataclass
class TimeSeriesOutput:
    horizon: int
    num_samples: int = 20
    quantiles: Sequence[float] = DEFAULT_QUANTILES


OutputSpec = TextOutput | TokensOutput | TimeSeriesOutput


# -- results ------------------------------------------------------------------------


@dataclass
class Forecast:
    """Sample paths shaped (num_samples, horizon) and their per-step summaries."""

    samples: np.ndarray
    median: np.ndarray
    quantiles: dict[float, np.ndarray]


@dataclass
class GenerationOutput:
    modality: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    text: str | None = None
    forecast: Forecast | None = None


@dataclass
class TextDelta:
    text: str


@dataclass
class SeriesStep:
    """One forecast step: every path's value and the quantiles across paths."""

    step: int
    values: np.ndarray  # (num_samples,)
    median: float
    quantiles: dict[float, float]


@dataclass
class Limits:
    """Service limits; requests past them get a ValueError naming the field."""

    max_prompt_tokens: int = 2048
    max_output_tokens: int = 1024
    timeseries_context_length: int = 512  # longer contexts keep their most recent values
    timeseries_min_context: int = 8
    timeseries_max_horizon: int = 64
    timeseries_max_samples: int = 100

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Limits:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown limits: {sorted(unknown)}")
        return cls(**data)


@dataclass
class Pipeline:
    bundle: ModelBundle
    limits: Limits = field(default_factory=Limits)
    engine_config: EngineConfig = field(default_factory=EngineConfig)
    _engine: Engine | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, device: str = "cpu") -> Pipeline:
        """Load a model folder, or a service folder (`service.json` naming its model)."""
        path = Path(path) if path is not None else default_service_dir()
        limits: dict[str, Any] = {}
        engine: dict[str, Any] = {}
        if (path / "service.json").is_file():
            service = json.loads((path / "service.json").read_text())
            limits, engine = service.get("limits", {}), service.get("engine", {})
            path = path / service.get("model", "model")
        bundle = load_model(path, device=device)
        limits = Limits.from_dict({**bundle.meta.get("limits", {}), **limits})
        return cls(bundle, limits, EngineConfig.from_dict(engine))

    @property
    def engine(self) -> Engine:
        """The engine every request of this pipeline runs on (created on first use)."""
        if self._engine is None:
            self._engine = Engine(self.bundle.model, self.engine_config)
        return self._engine

    @property
    def vocab(self):
        return self.bundle.vocab

    def tokenizer(self, modality: str):
        if modality not in self.bundle.tokenizers:
            raise ValueError(f"this model has no {modality} tokenizer")
        return self.bundle.tokenizers[modality]

    # -- one call ---------------------------------------------------------------------

    def __call__(
        self,
        prompt: str | PromptPart | Sequence[PromptPart],
        output: OutputSpec | None = None,
        sampling: SamplingParams | None = None,
    ) -> GenerationOutput:
        """Generate one output; see `stream` for the incremental variant."""
        plan = self._plan(prompt, output, sampling)
        steps = list(self._steps(plan))
        ids = torch.stack([s[0] for s in steps], 1)  # [rows, T]
        lps = torch.stack([s[1] for s in steps], 1)
        return plan.finish(ids, lps)

    def stream(
        self,
        prompt: str | PromptPart | Sequence[PromptPart],
        output: OutputSpec | None = None,
        sampling: SamplingParams | None = None,
    ) -> Iterator[TextDelta | SeriesStep | GenerationOutput]:
        """Yield chunks as they are decoded, then the final GenerationOutput."""
        plan = self._plan(prompt, output, sampling)
        ids, lps = [], []
        for step_ids, step_lps in self._steps(plan):
            ids.append(step_ids)
            lps.append(step_lps)
            yield from plan.chunks(len(ids) - 1, step_ids)
        yield from plan.flush()
        yield plan.finish(torch.stack(ids, 1), torch.stack(lps, 1))

    # -- internals --------------------------------------------------------------------

    def _steps(self, plan: _Plan) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Run the plan's requests on the engine; yield (ids [rows], logprobs [rows]) per
        output step once every row has produced it. Closing early aborts the requests."""
        requests = plan.requests()
        for req in requests:
            self.engine.add_request(req)
        done = 0
        try:
            while True:
                ready = min(len(r.output_ids) for r in requests)
                for k in range(done, ready):
                    ids = torch.tensor([r.output_ids[k] for r in requests])
                    yield ids, torch.tensor([r.output_logprobs[k] for r in requests])
                done = ready
                if all(r.status.finished for r in requests):
                    return
                self.engine.step()
        finally:
            for r in requests:
                if not r.status.finished:
                    self.engine.abort(r.request_id)

    def _plan(self, prompt, output, sampling) -> _Plan:
        parts = _as_parts(prompt)
        output = output or TextOutput()
        if isinstance(output, TimeSeriesOutput):
            return _ForecastPlan.build(self, parts, output, sampling or FORECAST_SAMPLING)
        if isinstance(output, TokensOutput):
            return _TokensPlan.build(self, parts, output, sampling or SamplingParams())
        if isinstance(output, TextOutput):
            return _TextPlan.build(self, parts, output, sampling or SamplingParams())
        raise ValueError(f"output: unknown output spec {type(output).__name__}")

    def prompt_ids(self, parts: Sequence[PromptPart]) -> list[int]:
        """Encode prompt parts (text and raw ids) into global ids."""
        ids: list[int] = []
        for part in parts:
            if isinstance(part, TokenIdsPart):
                ids.extend(_check_ids(part.ids, self.vocab.size))
            elif isinstance(part, TextPart):
                if not ids:
                    ids.append(self.vocab.special("<bos>"))
                ids.extend(sequence.text_ids(self.vocab, self.tokenizer("text"), part.text))
            else:
                raise ValueError(f"prompt: a {type(part).__name__} cannot be mixed in here")
        if not ids:
            raise ValueError("prompt: empty prompt")
        if len(ids) > self.limits.max_prompt_tokens:
            raise ValueError(
                f"prompt: {len(ids)} tokens exceeds max_prompt_tokens {self.limits.max_prompt_tokens}"
            )
        return ids

    def check_max_tokens(self, max_tokens: int) -> int:
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        if max_tokens > self.limits.max_output_tokens:
            raise ValueError(
                f"max_tokens {max_tokens} exceeds max_output_tokens {self.limits.max_output_tokens}"
            )
        return max_tokens


def default_service_dir() -> Path:
    """The bundled default service: $MMNTP_SERVICE, else services/default in the checkout."""
    env = os.environ.get("MMNTP_SERVICE")
    path = Path(env) if env else Path(__file__).resolve().parents[1] / "services" / "default"
    if not path.is_dir():
        raise FileNotFoundError(
            f"no default service at {path}; pass a model folder or set MMNTP_SERVICE"
        )
    return path


def _as_parts(prompt) -> list[PromptPart]:
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


def _check_ids(ids: Sequence[int], vocab_size: int) -> list[int]:
    out = [int(i) for i in ids]
    bad = [i for i in out if not 0 <= i < vocab_size]
    if bad:
        raise ValueError(f"prompt ids must lie in [0, {vocab_size}), got {bad[:5]}")
    return out


# -- plans: what a request produces and how its steps become chunks ----------------


@dataclass
class _Plan:
    pipe: Pipeline
    prompt_ids: list[int]
    segment: SegmentPlan
    sampling: SamplingParams
    rows: int = 1

    def requests(self) -> list[Request]:
        """One engine request per row; rows get independent seeds derived from the request's."""
        tag = uuid.uuid4().hex
        if self.rows == 1:
            return [Request(f"{tag}-0", self.prompt_ids, self.segment, self.sampling)]
        base = self.sampling.seed if self.sampling.seed is not None else uuid.uuid4().int >> 65
        seeds = np.random.SeedSequence(base).generate_state(self.rows, np.uint64) >> np.uint64(1)
        return [
            Request(
                f"{tag}-{i}", self.prompt_ids, self.segment, replace(self.sampling, seed=int(s))
            )
            for i, s in enumerate(seeds)
        ]

    def chunks(self, step: int, ids: torch.Tensor) -> Iterator:
        return iter(())

    def flush(self) -> Iterator:
        return iter(())

    def finish(self, ids: torch.Tensor, lps: torch.Tensor) -> GenerationOutput:
        row, lp = ids[0].tolist(), lps[0].tolist()
        reason = "stop" if row and self.segment.finish_reason(row) == "stop" else "length"
        return self.output(row, lp, reason)

    def output(self, ids: list[int], lps: list[float], reason: str) -> GenerationOutput:
        return GenerationOutput("tokens", ids, lps, reason)


@dataclass
class _TokensPlan(_Plan):
    @classmethod
    def build(cls, pipe, parts, output: TokensOutput, sampling):
        ids = pipe.prompt_ids(parts)
        stops = tuple(_check_ids(output.stop_ids, pipe.vocab.size))
        return cls(pipe, ids, free_plan(pipe.check_max_tokens(output.max_tokens), stops), sampling)


@dataclass
class _TextPlan(_Plan):
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

    def chunks(self, step, ids):
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
class _ForecastPlan(_Plan):
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
        return cls(pipe, ids, segment, sampling, output.num_samples, state, quantiles)

    def _values(self, ids: torch.Tensor) -> np.ndarray:
        start = self.pipe.vocab.range("timeseries").start
        return self.pipe.tokenizer("timeseries").decode(ids - start, self.state).numpy()

    def chunks(self, step, ids):
        values = self._values(ids)  # (num_samples,)
        qs = np.quantile(values, self.quantiles)
        yield SeriesStep(
            step, values, float(np.median(values)), dict(zip(self.quantiles, qs.tolist()))
        )

    def finish(self, ids, lps):
        samples = self._values(ids)  # (num_samples, horizon)
        qs = np.quantile(samples, self.quantiles, axis=0)
        forecast = Forecast(samples, np.median(samples, axis=0), dict(zip(self.quantiles, qs)))
        return GenerationOutput(
            "timeseries", ids[0].tolist(), lps[0].tolist(), "length", forecast=forecast
        )


def _check_range(name: str, value: int, lo: int, hi: int) -> None:
    if not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
