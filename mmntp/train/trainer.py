"""The model trainer: AdamW, warm-up + cosine, accumulation, autocast, DDP, exact resume.

The data side is the caller's: `build_data(recipe) -> (vocab, tokenizers, source)`, where
`source.batch(step, rank, world_size)` is deterministic in its arguments. Gradient
accumulation draws micro-batch m of rank r as virtual rank `r * grad_accum + m` of
`world_size * grad_accum`, so a run sees the same global batch whether it is split over
devices or over micro-steps, and a resume at step k needs no data-loader state.

The loss of a step is the mean over every non-ignored target of the global batch (all
ranks, all micro-batches), so accumulation and DDP give the gradient of one big batch.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from mmntp.model.config import preset
from mmntp.model.transformer import Transformer
from mmntp.model.vocab import VocabLayout
from mmntp.train.init import init_from_model
from mmntp.train.losses import (
    IGNORE_INDEX,
    TrainingLosses,
    add_continuous_heads,
    add_frame_heads,
)
from mmntp.train.recipe import OptimSection, Recipe
from mmntp.train.state import (
    TrainerState,
    checkpoint_name,
    checkpoints_dir,
    list_checkpoints,
    load_checkpoint,
    resolve_resume,
    save_checkpoint,
)

METRICS = "metrics.jsonl"


class BatchSource(Protocol):
    def batch(self, step: int, rank: int, world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids [B, L], targets [B, L]) as int64; targets already shifted, -100 = ignore."""
        ...


BuildData = Callable[[Recipe], tuple[VocabLayout, dict[str, Any], BatchSource]]
ExportFn = Callable[[Transformer, VocabLayout, dict[str, Any], Recipe], Any]


@dataclass
class TrainResult:
    """What one `train` call did: losses[i] is the loss of step start_step + i + 1."""

    step: int  # optimiser steps completed in total
    losses: list[float] = field(default_factory=list)
    checkpoint: Path | None = None  # newest checkpoint (None only if nothing was saved)
    start_step: int = 0  # where this call began (the resumed checkpoint's step, or 0)
    export: Any = None  # whatever export_fn returned


# -- optimiser and schedule ---------------------------------------------------------------


def lr_at(step: int, optim: OptimSection) -> float:
    """Learning rate of 0-based `step`: linear warm-up to lr, cosine to lr * min_lr_ratio.

    Warm-up reaches the peak at step warmup_steps - 1; the cosine lands on the floor at
    the last step (max_steps - 1) and stays there.
    """
    peak, floor = optim.lr, optim.lr * optim.min_lr_ratio
    if step < optim.warmup_steps:
        return peak * (step + 1) / optim.warmup_steps
    span = optim.max_steps - 1 - optim.warmup_steps
    progress = min(1.0, (step - optim.warmup_steps) / span) if span > 0 else 1.0
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: matrices decay; norms, biases and embeddings (tied head too) do not."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():  # tied weights appear once
        if p.requires_grad:
            (no_decay if p.ndim < 2 or id(p) in embeddings else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast pays on `device`: CUDA, or a CPU with AVX512-BF16 or AMX.
    Elsewhere CPU bf16 is emulated: a default-tiny step took 55 s against 5.2 s in fp32 on
    an AVX2-only EPYC (2 cores), where an AMX Xeon runs bf16 ~1.4x faster than fp32."""
    if device.type == "cuda":
        return True
    cpu = torch.cpu  # private probes; a torch without them gets fp32, the safe choice
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return device.type == "cpu" and any(getattr(cpu, p, lambda: False)() for p in probes)


def freeze_except(model: nn.Module, prefixes: list[str]) -> None:
    """Only parameters named by `prefixes` (a name or a dotted prefix) keep requires_grad;
    [] leaves everything trainable."""
    if not prefixes:
        return
    named = dict(model.named_parameters())
    chosen = set()
    for prefix in prefixes:
        hits = {n for n in named if n == prefix or n.startswith(prefix + ".")}
        if not hits:
            heads = sorted({".".join(n.split(".")[:2]) for n in named if n.startswith("heads.")})
            raise ValueError(
                f"train.trainable: {prefix!r} names no parameter of the model (its heads: {heads})"
            )
        chosen |= hits
    for name, p in named.items():
        p.requires_grad_(name in chosen)


def build_optimizer(model: nn.Module, optim: OptimSection) -> torch.optim.AdamW:
    groups = param_groups(model, optim.weight_decay)
    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps)


# -- process group --------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int
    world_size: int
    device: torch.device
    owns_group: bool  # we initialised the process group, so we destroy it

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            dist.all_reduce(tensor)
        return tensor


def _setup_distributed() -> _Dist:
    """Join torchrun's process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _Dist(0, 1, device, owns_group=False)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if cuda else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), device, owns)


# -- one step ---------------------------------------------------------------------------------


@dataclass
class _Run:
    recipe: Recipe
    model: nn.Module  # TrainingLosses around the Transformer, or DDP around that
    core: Transformer
    optimizer: torch.optim.Optimizer
    source: BatchSource
    dist: _Dist

    def autocast(self):
        mode, device = self.recipe.train.autocast, self.dist.device
        enabled = mode == "bf16" or (mode == "auto" and native_bf16(device))
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)

    def fetch(self, step: int, rank: int, world: int):
        """(ids, targets, continuous inputs or None) on the device."""
        batch = self.source.batch(step, rank, world)
        ids, targets = batch[0], batch[1]
        continuous = batch[2] if len(batch) > 2 else None
        if ids.ndim != 2 or ids.shape != targets.shape:
            raise ValueError(
                f"source.batch must return ids and targets [B, L] of one shape, "
                f"got {tuple(ids.shape)} and {tuple(targets.shape)}"
            )
        if ids.dtype != torch.long or targets.dtype != torch.long:
            raise ValueError(f"source.batch must return int64, got {ids.dtype}, {targets.dtype}")
        if ids.shape[1] > self.core.config.max_seq_len:
            raise ValueError(
                f"batch length {ids.shape[1]} > model max_seq_len {self.core.config.max_seq_len}"
            )
        device = self.dist.device
        if continuous is not None:
            continuous = {m: (k.to(device), v.to(device)) for m, (k, v) in continuous.items()}
        return ids.to(device, non_blocking=True), targets.to(device, non_blocking=True), continuous


def _train_step(run: _Run, step: int, lr: float) -> tuple[float, float, int]:
    """One optimiser step over grad_accum micro-batches per rank -> (loss, grad norm, tokens)."""
    accum, d = run.recipe.optim.grad_accum, run.dist
    micro = [run.fetch(step, d.rank * accum + m, d.world_size * accum) for m in range(accum)]
    counts = torch.tensor(
        [sum(int((b[1] != IGNORE_INDEX).sum()) for b in micro), sum(b[0].numel() for b in micro)],
        dtype=torch.float64,
        device=d.device,
    )
    n_targets, n_tokens = d.all_sum(counts).tolist()
    scale = d.world_size / max(n_targets, 1.0)  # DDP averages gradients over ranks: undo it
    loss_sum = torch.zeros((), dtype=torch.float64, device=d.device)
    for m, (ids, targets, continuous) in enumerate(micro):
        last = m == accum - 1
        sync = run.model.no_sync() if d.world_size > 1 and not last else nullcontext()
        # The heads' noise comes from (seed, step, virtual rank): exact resumes, as the data.
        seed = (run.recipe.seed * 1_000_003 + step) * 4099 + d.rank * accum + m
        generator = torch.Generator(d.device).manual_seed(seed)
        with sync:
            with run.autocast():
                loss = run.model(ids, targets, continuous, generator)  # summed, fp32
            (loss * scale).backward()
        loss_sum += loss.detach()
    loss = d.all_sum(loss_sum).item() / max(n_targets, 1.0)
    clip = run.recipe.optim.grad_clip or math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(run.core.parameters(), clip).item()  # pre-clip
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        raise FloatingPointError(f"step {step}: loss {loss}, grad norm {grad_norm}")
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return loss, grad_norm, int(n_tokens)


# -- progress -----------------------------------------------------------------------------


class _Metrics:
    """tokens/s over the window since the last log line, and metrics.jsonl (rank 0 writes)."""

    def __init__(self, path: Path | None, every: int) -> None:
        self.path, self.every = path, every
        self.window_start, self.window_tokens = time.perf_counter(), 0

    def record(self, state: TrainerState, loss: float, grad_norm: float, tokens: int) -> float:
        self.window_tokens += tokens
        tokens_per_s = self.window_tokens / max(time.perf_counter() - self.window_start, 1e-9)
        if self.path is not None and state.step % self.every == 0:
            line = {
                "step": state.step,
                "loss": loss,
                "lr": state.lr,
                "grad_norm": grad_norm,
                "tokens": state.tokens,
                "tokens_per_s": tokens_per_s,
                "elapsed_s": state.elapsed_s,
            }
            with self.path.open("a") as f:
                f.write(json.dumps(line) + "\n")
            self.window_start, self.window_tokens = time.perf_counter(), 0
        return tokens_per_s


def _trim_metrics(path: Path, step: int) -> None:
    """Drop lines past `step` (logged after the checkpoint we resume from) and torn lines."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)


# -- the loop ---------------------------------------------------------------------------------


def train(
    recipe: Recipe,
    build_data: BuildData,
    resume: str | Path | Literal["auto"] | None = "auto",
    *,
    export_fn: ExportFn | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train `recipe` to optim.max_steps, checkpointing into out_dir; see the module doc.

    `resume`: "auto" continues from the newest checkpoint in out_dir (or starts fresh),
    a path continues from that checkpoint, None starts fresh. Under torchrun
    (WORLD_SIZE > 1) every rank calls this; only rank 0 writes files and exports.
    """
    d = _setup_distributed()
    threads = torch.get_num_threads()
    try:
        if recipe.train.threads:
            torch.set_num_threads(recipe.train.threads)
        return _train(recipe, build_data, resume, export_fn, progress, d)
    finally:
        torch.set_num_threads(threads)
        if d.owns_group:
            dist.destroy_process_group()


def _train(recipe, build_data, resume, export_fn, progress, d: _Dist) -> TrainResult:
    out_dir = Path(recipe.out_dir)
    vocab, tokenizers, source = build_data(recipe)
    run, state, checkpoint = _setup(recipe, vocab, tokenizers, source, resume, d)
    result = TrainResult(step=state.step, checkpoint=checkpoint, start_step=state.step)
    if d.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _trim_metrics(out_dir / METRICS, state.step)
    metrics = _Metrics(out_dir / METRICS if d.main else None, recipe.train.log_every)
    max_steps, every = recipe.optim.max_steps, recipe.train.checkpoint_every
    bar = tqdm(
        total=max_steps,
        initial=state.step,
        desc=recipe.name,
        unit="step",
        dynamic_ncols=True,
        disable=not (progress and d.main),
    )
    began, elapsed_before = time.perf_counter(), state.elapsed_s
    run.core.train()
    with bar:
        for step in range(state.step, max_steps):
            lr = lr_at(step, recipe.optim)
            loss, grad_norm, tokens = _train_step(run, step, lr)
            state.step, state.lr, state.tokens = step + 1, lr, state.tokens + tokens
            state.elapsed_s = elapsed_before + time.perf_counter() - began
            result.losses.append(loss)
            tokens_per_s = metrics.record(state, loss, grad_norm, tokens)
            postfix = {"loss": f"{loss:.4f}", "lr": f"{lr:.2e}", "tok_s": f"{tokens_per_s:,.0f}"}
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
            if (every and state.step % every == 0) or state.step == max_steps:
                result.checkpoint = _checkpoint(run, vocab, tokenizers, state)
    result.step = state.step
    if export_fn is not None:
        result.export = export_fn(run.core, vocab, tokenizers, recipe) if d.main else None
        d.barrier()
    if progress and d.main:
        last = f"loss {result.losses[-1]:.4f}, " if result.losses else ""
        tqdm.write(
            f"{recipe.name}: step {state.step}/{max_steps}, {last}{state.tokens:,} tokens, "
            f"{state.elapsed_s:.1f}s; checkpoint {result.checkpoint}",
            file=sys.stderr,
        )
    return result


def _setup(recipe: Recipe, vocab: VocabLayout, tokenizers, source: BatchSource, resume, d: _Dist):
    """Model (seeded), optimiser, optional resume, DDP wrap -> (run, state, checkpoint)."""
    config = preset(recipe.model.preset, vocab.size, **recipe.model.overrides)
    if recipe.data.seq_len > config.max_seq_len:
        raise ValueError(
            f"data.seq_len={recipe.data.seq_len} exceeds the model's max_seq_len={config.max_seq_len}"
        )
    torch.manual_seed(recipe.seed)
    core = Transformer(config)
    frame_losses = add_frame_heads(core, vocab, tokenizers, recipe.model.frame_heads)
    continuous_losses = add_continuous_heads(core, recipe.model.continuous_heads)
    core = core.to(d.device)
    if recipe.train.autocast == "bf16" and not native_bf16(d.device) and d.main:
        tqdm.write(
            "train.autocast = bf16 on a CPU without native bf16: expect ~10x slower "
            'steps than fp32 ("auto" picks for you)',
            file=sys.stderr,
        )
    freeze_except(core, recipe.train.trainable)
    optimizer = build_optimizer(core, recipe.optim)
    state = TrainerState(world_size=d.world_size, recipe=recipe.to_dict())
    checkpoint = resolve_resume(resume, recipe.out_dir)
    if checkpoint is None and recipe.model.init_from:
        layers = recipe.model.init_layers or None
        init = init_from_model(core, vocab, recipe.model.init_from, tokenizers, layers)
        why = {"fresh": "their tokenizer changed", "resized": "vector width changed"}
        for key, reason in why.items():
            if init[key] and d.main:
                msg = f"model.init_from: {', '.join(init[key])} start fresh ({reason})"
                tqdm.write(msg, file=sys.stderr)
    if checkpoint is not None:
        loaded = load_checkpoint(checkpoint, core, optimizer)
        state.step, state.tokens = loaded.step, loaded.tokens
        state.elapsed_s, state.lr = loaded.elapsed_s, loaded.lr
    newer = [p.name for s, p in list_checkpoints(recipe.out_dir) if s > state.step]
    if newer:
        raise ValueError(
            f"{checkpoints_dir(recipe.out_dir)} holds checkpoints past step {state.step} "
            f"({', '.join(newer)}): resume from the newest (resume='auto') or move them away"
        )
    # DDP wraps the whole objective, so every head's loss is computed inside its forward.
    model: nn.Module = TrainingLosses(
        core, frame_losses, continuous_losses, compile=recipe.train.compile
    )
    if d.world_size > 1:
        ids = [d.device.index] if d.device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=ids)
    return _Run(recipe, model, core, optimizer, source, d), state, checkpoint


def _checkpoint(run: _Run, vocab: VocabLayout, tokenizers: dict, state: TrainerState) -> Path:
    """Rank 0 writes; the barriers keep every rank on the same side of the save."""
    recipe, d = run.recipe, run.dist
    d.barrier()
    path = checkpoints_dir(recipe.out_dir) / checkpoint_name(state.step)
    if d.main:
        path = save_checkpoint(
            recipe.out_dir,
            run.core,
            vocab,
            tokenizers,
            run.optimizer,
            state,
            recipe.train.keep_checkpoints,
        )
    d.barrier()
    return path
