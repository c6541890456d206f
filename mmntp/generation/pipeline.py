"""`Pipeline.from_pretrained(dir)`: prompt parts + an output spec -> a result dataclass.

The one user-facing API: the CLI, the service and batch jobs all go through it. Every
request runs on the pipeline's engine: `__call__`/`stream` drive it step by step in
this thread; `astream` goes through an AsyncEngine (the service). Use one style per
pipeline: both would step the same engine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmntp.api import (
    AudioChunk,
    GenerationOutput,
    ImageChunk,
    Limits,
    ModelInfo,
    OutputSpec,
    PromptPart,
    SamplingParams,
    SeriesChunk,
    TextChunk,
    TokensChunk,
)
from mmntp.engine import AsyncEngine, Engine, EngineConfig, Request
from mmntp.generation import tokens
from mmntp.generation.context import ModelContext
from mmntp.generation.jobs import Job, build_job
from mmntp.generation.validate import Capabilities, ValidRequest, validate
from mmntp.model.checkpoint import ModelBundle, load_model, service_model

Prompt = str | PromptPart | Sequence[PromptPart]
Chunk = TextChunk | TokensChunk | SeriesChunk | ImageChunk | AudioChunk | GenerationOutput


@dataclass
class Pipeline:
    bundle: ModelBundle
    limits: Limits = field(default_factory=Limits)
    engine_config: EngineConfig = field(default_factory=EngineConfig)
    name: str = "default"
    _engine: Engine | None = field(default=None, init=False, repr=False)
    _async: AsyncEngine | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, device: str = "cpu") -> Pipeline:
        """Load a model folder, or a service folder (`service.json` naming its model)."""
        path = Path(path) if path is not None else default_service_dir()
        model_dir, service = service_model(path)
        name = service.get("name", path.name) if service else path.name
        bundle = load_model(model_dir, device=device)
        limits = Limits.from_dict({**bundle.meta.get("limits", {}), **service.get("limits", {})})
        limits = limits.for_model(bundle.model.config.max_seq_len)
        return cls(bundle, limits, EngineConfig.from_dict(service.get("engine", {})), name)

    @property
    def vocab(self):
        return self.bundle.vocab

    @property
    def engine(self) -> Engine:
        """The engine every request of this pipeline runs on (created on first use)."""
        if self._engine is None:
            self._engine = Engine(self.bundle.model, self.engine_config)
        return self._engine

    @property
    def async_engine(self) -> AsyncEngine:
        if self._async is None:
            self._async = AsyncEngine(self.engine)
        return self._async

    @property
    def context(self) -> ModelContext:
        """What jobs see of the model: vocabulary, tokenizers, heads, limits."""
        return ModelContext(
            self.bundle.vocab,
            self.bundle.tokenizers,
            self.bundle.model.heads,
            self.limits,
            self.bundle.model.config.max_seq_len,
            series_tokens=_trained_series_tokens(self.bundle.meta),
        )

    def tokenizer(self, modality: str):
        return self.context.tokenizer(modality)

    def capabilities(self) -> Capabilities:
        return self.context.capabilities()

    def model_info(self) -> ModelInfo:
        caps, cfg = self.capabilities(), self.bundle.model.config
        prompts = [m for m in ("text", "timeseries") if m in caps.tokenizers] + ["token_ids"]
        return ModelInfo(
            self.name,
            caps.output_modalities,
            prompts,
            self.bundle.model.num_parameters(),
            cfg.max_seq_len,
            cfg.vocab_size,
            dataclasses.asdict(self.limits),
        )

    def tokenize(self, part: PromptPart) -> tuple[list[int], float | None]:
        """One part -> (global ids, the series scale or None); see `generation.tokens`."""
        return tokens.tokenize(self.context, part)

    def detokenize(self, modality, ids: list[int], scale: float = 0.0, got: str = ""):
        """Global ids of `modality` -> text or series values; see `generation.tokens`."""
        return tokens.detokenize(self.context, modality, ids, scale, got)

    # -- requests -----------------------------------------------------------------------

    def validate(
        self, prompt: Prompt, output: OutputSpec | None = None, sampling=None
    ) -> ValidRequest:
        """The one validation step: check a request and fill its defaults (FieldError
        naming the field if it is bad)."""
        return validate(prompt, output, sampling, self.capabilities())

    def prepare(self, prompt: Prompt, output: OutputSpec | None = None, sampling=None) -> Job:
        """Validate and encode a request (FieldError naming the field if it is bad)."""
        request = (
            prompt if isinstance(prompt, ValidRequest) else self.validate(prompt, output, sampling)
        )
        return build_job(self.context, request)

    def __call__(
        self,
        prompt: Prompt,
        output: OutputSpec | None = None,
        sampling: SamplingParams | None = None,
    ) -> GenerationOutput:
        """Generate one output; see `stream` for the incremental variant."""
        *_, result = self.stream(prompt, output, sampling)
        return result

    def stream(
        self,
        prompt: Prompt,
        output: OutputSpec | None = None,
        sampling: SamplingParams | None = None,
    ) -> Iterator[Chunk]:
        """Yield chunks as they are decoded, then the final GenerationOutput."""
        job = self.prepare(prompt, output, sampling)
        requests = job.requests()
        for req in requests:
            self.engine.add_request(req)
        steps = _Steps(requests)
        try:
            while True:
                for k, ids, lps, vectors in steps.ready():
                    yield from job.chunks(k, ids, lps, vectors)
                if steps.all_finished():
                    break
                self.engine.step()
        finally:
            for r in requests:
                if not r.status.finished:
                    self.engine.abort(r.request_id)
        yield from job.flush()
        yield steps.finish(job)

    async def astream(
        self,
        prompt: Prompt,
        output: OutputSpec | None = None,
        sampling: SamplingParams | None = None,
        *,
        request_id: str | None = None,
        priority: int = 0,
        deadline: float | None = None,
        owner: str = "",
        usage: Usage | None = None,
    ) -> AsyncIterator[Chunk]:
        """`stream` on the AsyncEngine. `deadline` is a time.monotonic() instant; `owner`
        names the caller for fair sharing (an API key's id); `usage`, when given, holds the
        tokens the engine consumed and produced once the stream ends, however it ends.

        Raises ValueError for a bad request and QueueFullError when the engine is full,
        both before the first chunk. Closing or cancelling the iterator aborts the
        engine requests within one step.
        """
        # Encoding (tokenizers) and, for images and audio, decoding (a VQ or codec decoder,
        # PNG) are CPU work: they run in a worker thread so the event loop only routes.
        job = await asyncio.to_thread(self.prepare, prompt, output, sampling)
        requests = job.requests(request_id, priority, deadline, owner)
        steps = _Steps(requests)
        progress = asyncio.Event()
        pumps = [asyncio.create_task(self._pump(r, progress)) for r in requests]
        try:
            while True:
                await progress.wait()
                progress.clear()
                failed = [p for p in pumps if p.done() and p.exception() is not None]
                if failed:
                    raise failed[0].exception()
                # Read "done" before the outputs: a pump may finish while a slow consumer
                # holds a yield below, and its last tokens must still go out.
                done = all(p.done() for p in pumps)
                for chunk in await _off_loop(job, _decode_ready, job, steps):
                    yield chunk
                if done:
                    break
        finally:
            for p in pumps:
                p.cancel()
            if usage is not None:
                usage.prompt_tokens = max(r.num_prompt_tokens for r in requests)
                usage.output_tokens = sum(len(r.output_ids) for r in requests)
        for chunk in await _off_loop(job, lambda j: list(j.flush()), job):
            yield chunk
        yield steps.finish(job)

    def generate_many(
        self,
        items: Sequence[tuple[Prompt, OutputSpec | None, SamplingParams | None]],
        progress: Any = None,
    ) -> list[GenerationOutput]:
        """Run many (prompt, output, sampling) requests batched on the engine -> results in order.

        Jobs are admitted while their rows fit the engine's running slots, so the waiting
        queue never overflows; `progress(done, total)` is called as jobs finish.
        """
        jobs = [self.prepare(*item) for item in items]
        tag = uuid.uuid4().hex[:8]
        pending, active = list(range(len(jobs)))[::-1], {}
        results: list[GenerationOutput | None] = [None] * len(jobs)
        cap = self.engine_config.max_num_seqs
        try:
            while pending or active:
                while pending and (not active or _rows(active) + _seqs(jobs[pending[-1]]) <= cap):
                    i = pending.pop()
                    active[i] = jobs[i].requests(f"batch-{tag}-{i}")
                    for r in active[i]:
                        self.engine.add_request(r)
                self.engine.step()
                for i in [i for i, rs in active.items() if all(r.status.finished for r in rs)]:
                    results[i] = _finish_job(jobs[i], active.pop(i))
                    if progress is not None:
                        progress(sum(r is not None for r in results), len(jobs))
        finally:  # an error leaves nothing of this batch running
            for rs in active.values():
                for r in rs:
                    self.engine.abort(r.request_id)
        return results  # type: ignore[return-value]

    async def _pump(self, request: Request, progress: asyncio.Event) -> None:
        try:
            async for _ in self.async_engine.generate(request):
                progress.set()  # the request object itself holds the outputs
        finally:
            progress.set()


@dataclass
class Usage:
    """Tokens one call consumed (its prompt) and produced (over every row): filled by
    `Pipeline.astream` when the stream ends, also when it is cancelled."""

    prompt_tokens: int = 0
    output_tokens: int = 0


class _Steps:
    """Tracks a job's rows: yields each output step once every row has produced it."""

    def __init__(self, requests: list[Request]) -> None:
        self.requests, self.done = requests, 0

    def ready(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, list | None]]:
        """(step, ids [rows], logprobs [rows], each row's vector or None if the step is a token)."""
        upto = min(len(r.output_ids) for r in self.requests)
        for k in range(self.done, upto):
            ids = torch.tensor([r.output_ids[k] for r in self.requests])
            lps = torch.tensor([r.output_logprobs[k] for r in self.requests])
            vectors = [r.output_vectors.get(k) for r in self.requests]
            yield k, ids, lps, (vectors if vectors[0] is not None else None)
        self.done = max(self.done, upto)

    def all_finished(self) -> bool:
        return all(r.status.finished for r in self.requests)

    def finish(self, job: Job) -> GenerationOutput:
        n = self.done
        ids = torch.tensor([r.output_ids[:n] for r in self.requests], dtype=torch.long)
        lps = torch.tensor([r.output_logprobs[:n] for r in self.requests], dtype=torch.float32)
        reasons = [r.finish_reason or "abort" for r in self.requests]
        result = job.finish(
            ids.reshape(len(self.requests), n), lps.reshape(len(self.requests), n), reasons
        )
        started = [r.first_scheduled_time for r in self.requests if r.first_scheduled_time]
        if started:
            result.queue_seconds = min(started) - min(r.arrival_time for r in self.requests)
        return result


def _decode_ready(job: Job, steps: _Steps) -> list[Chunk]:
    """The chunks of every step that completed since the last call."""
    return [c for k, ids, lps, vectors in steps.ready() for c in job.chunks(k, ids, lps, vectors)]


async def _off_loop(job: Job, fn, *args):
    """`fn(*args)` in a worker thread for jobs whose stream decoding is heavy (images,
    audio); in place for the rest, where a thread hop would cost more than the work."""
    if job.heavy_decode:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


def _rows(active: dict[int, list[Request]]) -> int:
    """Engine sequences in flight (a guided request runs two)."""
    return sum(len(rs) * (2 if rs[0].uncond_prompt_ids else 1) for rs in active.values())


def _seqs(job: Job) -> int:
    return job.rows * (2 if job.uncond_ids else 1)


def _finish_job(job: Job, requests: list[Request]) -> GenerationOutput:
    """A finished job's result, its chunks replayed so stream decoders see every step."""
    steps = _Steps(requests)
    for k, ids, lps, vectors in steps.ready():
        for _ in job.chunks(k, ids, lps, vectors):
            pass
    for _ in job.flush():
        pass
    return steps.finish(job)


def default_service_dir() -> Path:
    """The bundled default service: $MMNTP_SERVICE, else services/default in the checkout."""
    env = os.environ.get("MMNTP_SERVICE")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "services" / "default"
    if not path.is_dir():
        raise FileNotFoundError(
            f"no default service at {path}; pass a model folder or set MMNTP_SERVICE"
        )
    return path


def _trained_series_tokens(meta: dict) -> bool:
    """Whether the model's token head learnt series values: False only when its recipe
    names series sources and all of them are patch sources (a patch-only forecaster)."""
    mixture = meta.get("recipe", {}).get("data", {}).get("mixture")
    if not isinstance(mixture, list):
        return True
    sources = {e.get("source") for e in mixture if isinstance(e, dict)}
    return "timeseries" in sources or "timeseries_patch" not in sources
