"""Reference generation loop: one prompt (batched as identical rows), a fixed KV cache.

Deliberately simple: it is the oracle the engine is tested against, so it favours
obvious correctness over speed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from mmntp.api import SamplingParams
from mmntp.api.sampling import neutral
from mmntp.model.guidance import guidance_scale, guide
from mmntp.model.sampling import make_generator, sample_next, token_logprobs
from mmntp.model.transformer import ContinuousInput, Transformer

AllowedFn = Callable[[int], "torch.Tensor | None"]


@dataclass
class GenerationResult:
    """Generated ids and their log-probabilities, one list per row."""

    token_ids: list[list[int]]
    logprobs: list[list[float]]
    finish_reasons: list[str]  # "stop" (a stop id was produced) or "length"


def generate_reference(
    model: Transformer,
    prompt: Sequence[int] | torch.Tensor,
    max_new_tokens: int,
    params: SamplingParams | None = None,
    *,
    num_rows: int = 1,
    stop_ids: Sequence[int] = (),
    allowed: torch.Tensor | AllowedFn | None = None,
    continuous: list[ContinuousInput] | None = None,
    uncond_prompt: Sequence[int] | torch.Tensor | None = None,
) -> GenerationResult:
    """Generate after `prompt` (ids [T]) for `num_rows` independent rows.

    `allowed` is a boolean mask [V] for every step, or a function step -> mask (or None)
    for per-step constraints. `continuous` places vectors in the prompt (masks [1, T]).
    Rows draw from one generator seeded by `params.seed`, so a seed fixes all rows.
    Each row ends after its first stop id ("stop") or at max_new_tokens ("length").
    With `uncond_prompt`, every step samples from classifier-free guided logits
    uncond + params.guidance_scale * (cond - uncond), the unconditional prompt running in
    a cache of its own and receiving the same tokens.
    """
    steps = iter_reference(
        model,
        prompt,
        max_new_tokens,
        params,
        num_rows=num_rows,
        stop_ids=stop_ids,
        allowed=allowed,
        continuous=continuous,
        uncond_prompt=uncond_prompt,
    )
    ids, lps = zip(*steps)
    return _collect(torch.stack(ids, 1), torch.stack(lps, 1), set(stop_ids))


@torch.no_grad()
def iter_reference(
    model: Transformer,
    prompt: Sequence[int] | torch.Tensor,
    max_new_tokens: int,
    params: SamplingParams | None = None,
    *,
    num_rows: int = 1,
    stop_ids: Sequence[int] = (),
    allowed: torch.Tensor | AllowedFn | None = None,
    continuous: list[ContinuousInput] | None = None,
    uncond_prompt: Sequence[int] | torch.Tensor | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (ids [num_rows], logprobs [num_rows]) per step; stops once every row has
    produced a stop id. Arguments as for `generate_reference`."""
    params = neutral(params)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    ids = torch.as_tensor(prompt, dtype=torch.long).flatten()
    if ids.numel() == 0:
        raise ValueError("prompt is empty")
    total = ids.numel() + max_new_tokens
    if total > model.config.max_seq_len:
        raise ValueError(
            f"prompt ({ids.numel()}) + max_new_tokens ({max_new_tokens}) exceeds the "
            f"model's max_seq_len {model.config.max_seq_len}"
        )
    device = model.tok_embeddings.weight.device
    generator = make_generator(params, device)
    cache = model.new_cache(num_rows, max_len=total)
    rows = ids.to(device).expand(num_rows, -1)
    continuous = [_repeat_rows(c, num_rows) for c in continuous or ()]
    positions = torch.arange(rows.shape[1], device=device).expand(num_rows, -1)
    logits = model(rows, positions=positions, cache=cache, continuous=continuous)[:, -1]
    uncond = None
    if uncond_prompt is not None:
        uncond = _Unconditional(model, uncond_prompt, num_rows, max_new_tokens, device)
        logits = guide(logits, uncond.logits, guidance_scale(params.guidance_scale))

    done = torch.zeros(num_rows, dtype=torch.bool, device=device)
    stops = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
    seen = torch.zeros(num_rows, logits.shape[-1], dtype=torch.bool, device=device)
    seen[:, rows[0]] = True  # repetition penalty looks at prompt and output ids
    for step in range(max_new_tokens):
        mask = allowed(step) if callable(allowed) else allowed
        nxt = sample_next(logits, params, generator, mask, seen)
        seen[torch.arange(num_rows, device=device), nxt] = True
        yield nxt, token_logprobs(logits, nxt)
        done |= torch.isin(nxt, stops)
        if bool(done.all()) or step == max_new_tokens - 1:
            return
        pos = torch.full((num_rows, 1), rows.shape[1] + step, device=device)
        logits = model(nxt[:, None], positions=pos, cache=cache)[:, -1]
        if uncond is not None:
            logits = guide(logits, uncond.feed(nxt), guidance_scale(params.guidance_scale))


class _Unconditional:
    """The unconditional prompt's own cache and logits, fed the same tokens each step."""

    def __init__(self, model, prompt, num_rows: int, max_new_tokens: int, device) -> None:
        ids = torch.as_tensor(prompt, dtype=torch.long).flatten().to(device)
        self.model, self.length = model, ids.numel()
        self.cache = model.new_cache(num_rows, max_len=ids.numel() + max_new_tokens)
        rows = ids.expand(num_rows, -1)  # rows: [num_rows, T]
        positions = torch.arange(self.length, device=device).expand(num_rows, -1)
        self.logits = model(rows, positions=positions, cache=self.cache)[:, -1]
        self.fed = 0

    def feed(self, nxt: torch.Tensor) -> torch.Tensor:
        pos = torch.full((nxt.shape[0], 1), self.length + self.fed, device=nxt.device)
        self.fed += 1
        self.logits = self.model(nxt[:, None], positions=pos, cache=self.cache)[:, -1]
        return self.logits


def _repeat_rows(item: ContinuousInput, n: int) -> ContinuousInput:
    return ContinuousInput(item.modality, item.mask.expand(n, -1), item.values.repeat(n, 1))


def _collect(ids: torch.Tensor, lps: torch.Tensor, stops: set[int]) -> GenerationResult:
    """Cut each row after its first stop id."""
    token_ids, logprobs, reasons = [], [], []
    for row_ids, row_lp in zip(ids.tolist(), lps.tolist()):
        end, reason = len(row_ids), "length"
        for i, tok in enumerate(row_ids):
            if tok in stops:
                end, reason = i + 1, "stop"
                break
        token_ids.append(row_ids[:end])
        logprobs.append(row_lp[:end])
        reasons.append(reason)
    return GenerationResult(token_ids, logprobs, reasons)
