"""Engine.step() = schedule, execute, update; plus request intake, abort and statistics."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from mmntp.api import SamplingParams
from mmntp.engine.compiled_decode import CompiledDecode, warm_up_prompts
from mmntp.engine.kv_cache import KVCacheManager, num_blocks_for_budget
from mmntp.engine.plans import free_plan
from mmntp.engine.request import Request, check_ids_in_vocab, shadow_of
from mmntp.engine.runner import BlockStore, ModelRunner
from mmntp.engine.sampler import Sampler
from mmntp.engine.scheduler import Scheduler, SchedulerConfig
from mmntp.model.sampling import make_generator
from mmntp.model.transformer import Transformer

# Settings where 0 means "no bound" (see each one's comment).
_MAY_BE_ZERO = ("contended_rows_per_step", "background_rows_per_step", "background_batched_tokens")


@dataclass
class EngineConfig:
    """Cache and batching limits (a service sets these in its service.json "engine")."""

    block_size: int = 16
    kv_cache_bytes: int = 64 << 20
    enable_prefix_caching: bool = True
    max_num_batched_tokens: int = 512
    max_num_seqs: int = 64
    max_prefill_chunk: int = 256
    max_waiting_requests: int = 256
    max_waiting_tokens: int = 1 << 20
    # While two or more API keys have work, a step computes at most this many rows and
    # tokens, shared fairly between the keys (scheduler.py); rows 0 = off. The default 6
    # is measured (docs/benchmarks.md, "Fairness between keys"): with the top-k sampling
    # path, a small request's p99 under another key's flood is 2.9x idle at the median of 7
    # runs (8 rows: 3.3x), and the flooding key keeps more throughput than 8 rows did before.
    contended_rows_per_step: int = 6
    contended_batched_tokens: int = 64
    # A step of background work alone (a server's batch jobs) computes about this many
    # rows (0 = no bound): an interactive request arriving mid-step waits for that step.
    background_rows_per_step: int = 4
    # ... and at most this many tokens (0 = max_num_batched_tokens): a batch request's
    # prompt is prefilled in short chunks (a 256-token chunk made a 22 ms step on CPU).
    background_batched_tokens: int = 32
    # One-row decode steps through torch.compile (compiled_decode.py): ~1.3x faster
    # batch-1 decode than the eager engine on the bench's tiny model, after compiles of
    # 13-67 s (`warm_up`); needs a C++ compiler on CPU. Off by default so one-shot
    # commands start at once.
    compile_decode: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _MAY_BE_ZERO:
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise ValueError(f"engine.{f.name} must be 0 (off) or more, got {value!r}")
            elif f.type == "int" and (not isinstance(value, int) or value < 1):
                raise ValueError(f"engine.{f.name} must be a positive integer, got {value!r}")
            if f.type == "bool" and not isinstance(value, bool):
                raise ValueError(f"engine.{f.name} must be true or false, got {value!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineConfig:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown engine settings: {sorted(unknown)}")
        return cls(**data)

    def scheduler_config(self) -> SchedulerConfig:
        return SchedulerConfig(
            max_num_batched_tokens=self.max_num_batched_tokens,
            max_num_seqs=self.max_num_seqs,
            max_prefill_chunk=self.max_prefill_chunk,
            max_waiting_requests=self.max_waiting_requests,
            max_waiting_tokens=self.max_waiting_tokens,
            contended_rows_per_step=self.contended_rows_per_step,
            contended_batched_tokens=self.contended_batched_tokens,
            background_rows_per_step=self.background_rows_per_step,
            background_batched_tokens=self.background_batched_tokens,
        )


@dataclass
class RequestOutput:
    """What one step produced for one request: the new part only (a delta)."""

    request_id: str
    new_token_ids: list[int]
    new_logprobs: list[float]
    new_vectors: list[torch.Tensor]
    finished: bool
    finish_reason: str | None
    num_prompt_tokens: int
    num_output_tokens: int
    queue_time: float | None = None  # arrival -> first scheduled (s)
    time_to_first_token: float | None = None  # arrival -> first output (s)

    def merge(self, later: RequestOutput) -> RequestOutput:
        """This delta followed by a later one, as one delta (for slow consumers)."""
        return RequestOutput(
            self.request_id,
            self.new_token_ids + later.new_token_ids,
            self.new_logprobs + later.new_logprobs,
            self.new_vectors + later.new_vectors,
            later.finished,
            later.finish_reason,
            later.num_prompt_tokens,
            later.num_output_tokens,
            self.queue_time if self.queue_time is not None else later.queue_time,
            self.time_to_first_token
            if self.time_to_first_token is not None
            else later.time_to_first_token,
        )


@dataclass
class EngineStats:
    """Live statistics; latency samples are the most recent ones (seconds)."""

    num_running: int = 0
    num_waiting: int = 0
    cache_usage: float = 0.0
    prefix_cache_hit_rate: float = 0.0
    num_preemptions: int = 0
    num_finished: int = 0
    steps: int = 0
    time_to_first_token: deque = field(default_factory=lambda: deque(maxlen=4096))
    inter_token_latency: deque = field(default_factory=lambda: deque(maxlen=16384))
    queue_time: deque = field(default_factory=lambda: deque(maxlen=4096))

    def summary(self) -> dict[str, float]:
        out = {
            "num_running": self.num_running,
            "num_waiting": self.num_waiting,
            "cache_usage": self.cache_usage,
            "prefix_cache_hit_rate": self.prefix_cache_hit_rate,
            "num_preemptions": self.num_preemptions,
            "num_finished": self.num_finished,
        }
        for name in ("time_to_first_token", "inter_token_latency", "queue_time"):
            samples = sorted(getattr(self, name))
            for q in (50, 99):
                out[f"{name}_p{q}"] = _percentile(samples, q)
        return out


def _percentile(sorted_samples: list[float], q: float) -> float:
    if not sorted_samples:
        return float("nan")
    idx = min(len(sorted_samples) - 1, round(q / 100 * (len(sorted_samples) - 1)))
    return sorted_samples[idx]


class Engine:
    """Continuous batching over a block KV cache for one model on one device."""

    def __init__(self, model: Transformer, config: EngineConfig | None = None) -> None:
        self.model = model.eval()
        model.use_decode_layout()  # one-row decode matmuls over column-major wide weights
        self.config = config = config or EngineConfig()
        cfg = model.config
        dtype_bytes = model.tok_embeddings.weight.element_size()
        num_blocks = num_blocks_for_budget(
            config.kv_cache_bytes,
            config.block_size,
            cfg.n_layers,
            cfg.n_kv_heads,
            cfg.head_dim,
            dtype_bytes,
        )
        self.kv = KVCacheManager(num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(config.scheduler_config(), self.kv)
        device = model.tok_embeddings.weight.device
        store = BlockStore(model, num_blocks, config.block_size)
        compiled = CompiledDecode(model, store.k, store.v) if config.compile_decode else None
        self.runner = ModelRunner(model, store, Sampler(cfg.vocab_size, device), compiled)
        self.stats = EngineStats()
        self._emitted: dict[str, int] = {}
        self._last_token_time: dict[str, float] = {}
        self._aborted: list[Request] = []

    # -- intake ---------------------------------------------------------------------

    def add_request(self, request: Request) -> None:
        """Queue a request; raises ValueError (bad request) or QueueFullError (overload).

        A request with `uncond_prompt_ids` is queued with its unconditional shadow row
        (classifier-free guidance); the pair is scheduled, preempted and ended together.
        """
        rows = [request]
        if request.uncond_prompt_ids is not None:
            if self.scheduler.config.max_num_batched_tokens < 2:
                raise ValueError("guidance needs engine.max_num_batched_tokens >= 2")
            rows.append(shadow_of(request))
        for row in rows:
            name = "uncond_prompt_ids" if row.is_shadow else "prompt_ids"
            check_ids_in_vocab(row.prompt_ids, self.model.config.vocab_size, name)
            if row.max_total_tokens > self.model.config.max_seq_len:
                raise ValueError(
                    f"{name} ({row.num_prompt_tokens}) + max_tokens ({row.plan.max_tokens}) "
                    f"exceeds the model's max_seq_len {self.model.config.max_seq_len}"
                )
        if self.scheduler.get(request.request_id) is not None:
            raise ValueError(f"request_id {request.request_id!r} is already in flight")
        request.generator = make_generator(request.params, self.runner.device)
        self.scheduler.add_request(request)
        self._emitted[request.request_id] = 0

    def abort(self, request_id: str) -> bool:
        """Stop a request now and free its cache; its final output comes with the next step."""
        request = self.scheduler.abort(request_id)
        if request is None:
            return False
        self._aborted.append(request)
        return True

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished() or bool(self._aborted)

    # -- the loop -------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        now = time.monotonic()
        ended = self.scheduler.expire_deadlines(now) + self._aborted
        self._aborted = []
        scheduled = self.scheduler.schedule()
        results = self.runner.execute(scheduled.scheduled) if scheduled.scheduled else {}
        changed = self._update(scheduled, results)
        self.stats.steps += 1
        self.stats.num_preemptions += len(scheduled.preempted)
        return self._outputs(changed + ended)

    def _update(self, scheduled, results) -> list[Request]:
        for request_id, (_, _, vector) in results.items():
            if vector is not None:
                req = self.scheduler.get(request_id)
                req.output_vectors[len(req.output_ids)] = vector
        sampled = {rid: (tok, lp) for rid, (tok, lp, _) in results.items()}
        return self.scheduler.update(scheduled, sampled)

    def _outputs(self, requests: list[Request]) -> list[RequestOutput]:
        now = time.monotonic()
        outputs = []
        for req in requests:
            if req.is_shadow:  # internal row: its partner reports for both
                continue
            rid = req.request_id
            start = self._emitted.get(rid, 0)
            new_ids = req.output_ids[start:]
            if start == 0 and new_ids:
                req.first_token_time = now
                self.stats.time_to_first_token.append(now - req.arrival_time)
                if req.first_scheduled_time is not None:
                    self.stats.queue_time.append(req.first_scheduled_time - req.arrival_time)
            elif new_ids and rid in self._last_token_time:
                self.stats.inter_token_latency.append(now - self._last_token_time[rid])
            if new_ids:
                self._last_token_time[rid] = now
            outputs.append(self._delta(req, start))
            self._emitted[rid] = len(req.output_ids)
            if req.status.finished:
                self._emitted.pop(rid, None)
                self._last_token_time.pop(rid, None)
                req.finished_time = now
                self.stats.num_finished += 1
        self._refresh_gauges()
        return outputs

    def _delta(self, req: Request, start: int) -> RequestOutput:
        n = len(req.output_ids)
        queue = ttft = None
        if start == 0 and req.first_scheduled_time is not None:
            queue = req.first_scheduled_time - req.arrival_time
        if start == 0 and req.first_token_time is not None:
            ttft = req.first_token_time - req.arrival_time
        return RequestOutput(
            req.request_id,
            req.output_ids[start:],
            req.output_logprobs[start:],
            [req.output_vectors[k] for k in range(start, n) if k in req.output_vectors],
            req.status.finished,
            req.finish_reason,
            req.num_prompt_tokens,
            n,
            queue,
            ttft,
        )

    def _refresh_gauges(self) -> None:
        self.stats.num_running = self.scheduler.num_running
        self.stats.num_waiting = self.scheduler.num_waiting
        self.stats.cache_usage = self.kv.usage
        self.stats.prefix_cache_hit_rate = self.kv.prefix_cache_hit_rate

    # -- convenience ----------------------------------------------------------------

    def warm_up(self) -> None:
        """Make compile_decode's compiles happen now, not on a caller's request (no-op
        without it): a few short greedy requests, one at a time; statistics reset after."""
        if self.runner.compiled is None:
            return
        greedy = SamplingParams(temperature=0.0)
        prompts = warm_up_prompts(self.model.config.vocab_size, self.config.block_size)
        for i, prompt in enumerate(prompts):
            self.run_to_completion([Request(f"warm-up-{i}", prompt, free_plan(6), greedy)])
        self.stats = EngineStats()
        self.kv.reset_prefix_cache_stats()

    def run_to_completion(self, requests: list[Request]) -> dict[str, Request]:
        """Add requests and step until all finish (tests, batch jobs)."""
        for r in requests:
            self.add_request(r)
        while self.has_unfinished():
            self.step()
        return {r.request_id: r for r in requests}
