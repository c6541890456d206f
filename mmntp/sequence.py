"""How each modality is written into the one sequence (shared by training and inference).

    text document:   <bos> text... <eos>
    forecast:        <bos> <task_forecast> <begin_timeseries> context... future... <end_timeseries> <eos>
    text-to-image:   <bos> <task_generate> <begin_text> caption... <end_text> <begin_image>
                     codes... <end_image> <eos>   (no caption: the unconditional prompt)

A prompt stops where generation should take over; training writes the whole thing.
Keeping both directions in one module is what guarantees they agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmntp.model.vocab import VocabLayout
from mmntp.tokenizers import DiscreteTokenizer


def global_ids(vocab: VocabLayout, modality: str, codes: torch.Tensor) -> list[int]:
    """Local codes (T,) of a single-codebook tokenizer -> global ids."""
    return vocab.to_global(modality, 0, codes.long()).tolist()


def text_ids(vocab: VocabLayout, tokenizer: DiscreteTokenizer, text: str) -> list[int]:
    return global_ids(vocab, "text", tokenizer.encode(text).codes)


def text_document(vocab: VocabLayout, tokenizer: DiscreteTokenizer, text: str) -> list[int]:
    """A training sequence for plain text."""
    return [vocab.special("<bos>"), *text_ids(vocab, tokenizer, text), vocab.special("<eos>")]


def forecast_header(vocab: VocabLayout) -> list[int]:
    return [
        vocab.special("<bos>"),
        vocab.special("<task_forecast>"),
        vocab.special("<begin_timeseries>"),
    ]


def forecast_prompt(
    vocab: VocabLayout, tokenizer: DiscreteTokenizer, context: Sequence[float]
) -> tuple[list[int], dict]:
    """Prompt ids for forecasting after `context`, and the tokenizer state (scale)."""
    encoded = tokenizer.encode(context)
    return forecast_header(vocab) + global_ids(vocab, "timeseries", encoded.codes), encoded.state


def forecast_document(
    vocab: VocabLayout, tokenizer: DiscreteTokenizer, series: Sequence[float], context_len: int
) -> list[int]:
    """A training sequence: the whole window scaled by its first `context_len` values."""
    state = tokenizer.encode(series[:context_len]).state
    codes = tokenizer.encode(series, state=state).codes
    return [
        *forecast_header(vocab),
        *global_ids(vocab, "timeseries", codes),
        vocab.special("<end_timeseries>"),
        vocab.special("<eos>"),
    ]


def series_span(vocab: VocabLayout, tokenizer: DiscreteTokenizer) -> tuple[int, int]:
    """Global [lo, hi) ids a generator may sample for series values: the value bins only."""
    start = vocab.range("timeseries").start
    lo, hi = tokenizer.sample_range
    return start + lo, start + hi


def image_prompt(
    vocab: VocabLayout, tokenizer: DiscreteTokenizer, caption: str | None
) -> list[int]:
    """Prompt ids for generating an image of `caption`; None gives the unconditional prompt
    (the same frame with no caption: what classifier-free guidance mixes against)."""
    caption_ids = text_ids(vocab, tokenizer, caption) if caption else []
    return [
        vocab.special("<bos>"),
        vocab.special("<task_generate>"),
        vocab.special("<begin_text>"),
        *caption_ids,
        vocab.special("<end_text>"),
        vocab.special("<begin_image>"),
    ]


def image_document(
    vocab: VocabLayout, tokenizer: DiscreteTokenizer, caption: str | None, codes: torch.Tensor
) -> list[int]:
    """A training sequence: the image prompt, the image's codes, then the closing tokens."""
    return [
        *image_prompt(vocab, tokenizer, caption),
        *global_ids(vocab, "image", codes),
        vocab.special("<end_image>"),
        vocab.special("<eos>"),
    ]
