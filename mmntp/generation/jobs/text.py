"""Raw-token and text jobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mmntp.api import GenerationOutput, TextChunk, TextOutput, TokensChunk, TokensOutput
from mmntp.engine import free_plan, text_plan
from mmntp.generation.jobs.base import Job


@dataclass
class TokensJob(Job):
    def chunks(self, step, ids, lps, vectors=None):
        yield TokensChunk([int(ids[0])], [float(lps[0])])

    @classmethod
    def build(cls, ctx, parts, output: TokensOutput, sampling):
        ids = ctx.prompt_ids(parts)
        return cls(ctx, ids, free_plan(output.max_tokens, tuple(output.stop_ids)), sampling)


@dataclass
class TextJob(Job):
    decoder: Any = None

    @classmethod
    def build(cls, ctx, parts, output: TextOutput, sampling):
        vocab = ctx.vocab
        text = vocab.range("text")
        segment = text_plan(output.max_tokens, (text.start, text.stop), vocab.special("<eos>"))
        plan = cls(ctx, ctx.prompt_ids(parts), segment, sampling)
        plan.decoder = ctx.tokenizer("text").stream_decoder()
        return plan

    def _local(self, ids: list[int]) -> torch.Tensor:
        start = self.ctx.vocab.range("text").start
        stops = self.segment.stop_ids
        return torch.tensor([i - start for i in ids if i not in stops], dtype=torch.long)

    def chunks(self, step, ids, lps, vectors=None):
        delta = self.decoder.push(self._local(ids[:1].tolist()))
        if delta:
            yield TextChunk(delta)

    def flush(self):
        rest = self.decoder.flush()
        if rest:
            yield TextChunk(rest)

    def output(self, ids, lps, reason):
        text = self.ctx.tokenizer("text").decode(self._local(ids))
        return GenerationOutput("text", ids, lps, reason, text=text)
