"""Tokenize and Detokenize: one prompt part to global ids and back, as the service's
unary calls and `mmntp tokenize` expose them."""

from __future__ import annotations

import math

import torch

from mmntp.api import FieldError, PromptPart, TextPart, TokenIdsPart
from mmntp.format import sequence
from mmntp.generation.context import ModelContext
from mmntp.generation.validate import check_part

DETOKENIZED = ("text", "timeseries")


def tokenize(ctx: ModelContext, part: PromptPart) -> tuple[list[int], float | None]:
    """(global ids, the series scale or None): text without <bos>; a series, every value."""
    part = check_part(part, "part", ctx.capabilities())
    if isinstance(part, TokenIdsPart):
        return list(part.ids), None
    if isinstance(part, TextPart):
        return sequence.text_ids(ctx.vocab, ctx.tokenizer("text"), part.text), None
    encoded = ctx.tokenizer("timeseries").encode(part.values)
    ids = sequence.global_ids(ctx.vocab, "timeseries", encoded.codes)
    return ids, float(encoded.state["scale"])


def detokenize(
    ctx: ModelContext, modality: str | None, ids: list[int], scale: float, got: str = ""
) -> str | list[float]:
    """Global ids of one modality -> text, or series values (NaN for PAD/EOS codes)."""
    if modality not in DETOKENIZED or modality not in ctx.tokenizers:
        can = [f"MODALITY_{m.upper()}" for m in DETOKENIZED if m in ctx.tokenizers]
        raise FieldError(
            "modality", f"this model detokenizes {' or '.join(can)}, got {got or modality}"
        )
    span = ctx.vocab.range(modality)
    for j, i in enumerate(ids):
        if not span.start <= i < span.stop:
            raise FieldError(
                f"ids[{j}]", f"{i} is not a {modality} id (they lie in [{span.start}, {span.stop}))"
            )
    codes = torch.tensor(ids, dtype=torch.long) - span.start  # codes: [T]
    tok = ctx.tokenizer(modality)
    if modality == "text":
        return tok.decode(codes)
    if not (math.isfinite(scale) and scale > 0):
        raise FieldError("scale", f"must be the positive scale Tokenize returned, got {scale}")
    return tok.decode(codes, {"scale": scale}).tolist()
