"""How each modality is written into the one sequence (shared by training and inference).

    text document:   <bos> text... <eos>
    forecast:        <bos> <task_forecast> <begin_timeseries> context... future... <end_timeseries> <eos>
    text-to-image:   <bos> <task_generate> <begin_text> caption... <end_text> <begin_image>
                     codes... <end_image> <eos>   (no caption: the unconditional prompt)
    text-to-audio:   the same with <begin_audio> frames... <end_audio>; a frame of a
                     K-level codec is K ids (level 0 first), frames in time order
    latent image:    the image prompt, then one continuous position per k x k cell of
                     KL latents (the id there is LATENT_PLACEHOLDER, the vector replaces
                     its embedding), then <end_image> <eos>

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


def patch_forecast_document(vocab: VocabLayout, patches: int) -> tuple[list[int], list[int]]:
    """A training sequence of series patches: (ids, indices of its vector positions).

    The forecast header, one LATENT_PLACEHOLDER position per patch (its vector is the
    patch), then ``<end_timeseries> <eos>``."""
    header = forecast_header(vocab)
    ids = [
        *header,
        *[vocab.special(LATENT_PLACEHOLDER)] * patches,
        vocab.special("<end_timeseries>"),
        vocab.special("<eos>"),
    ]
    return ids, list(range(len(header), len(header) + patches))


def patch_forecast_prompt(vocab: VocabLayout, patches: int) -> tuple[list[int], list[int]]:
    """Prompt ids for a next-patch forecast after ``patches`` context patches, and the
    indices of their vector positions."""
    header = forecast_header(vocab)
    ids = [*header, *[vocab.special(LATENT_PLACEHOLDER)] * patches]
    return ids, list(range(len(header), len(ids)))


def series_span(vocab: VocabLayout, tokenizer: DiscreteTokenizer) -> tuple[int, int]:
    """Global [lo, hi) ids a generator may sample for series values: the value bins only."""
    start = vocab.range("timeseries").start
    lo, hi = tokenizer.sample_range
    return start + lo, start + hi


def generate_prompt(
    vocab: VocabLayout, tokenizer: DiscreteTokenizer, caption: str | None, modality: str
) -> list[int]:
    """Prompt ids for generating `modality` from `caption`; None gives the unconditional
    prompt (the same frame with no caption: what classifier-free guidance mixes against)."""
    caption_ids = text_ids(vocab, tokenizer, caption) if caption else []
    return [
        vocab.special("<bos>"),
        vocab.special("<task_generate>"),
        vocab.special("<begin_text>"),
        *caption_ids,
        vocab.special("<end_text>"),
        vocab.special(f"<begin_{modality}>"),
    ]


def image_prompt(
    vocab: VocabLayout, tokenizer: DiscreteTokenizer, caption: str | None
) -> list[int]:
    return generate_prompt(vocab, tokenizer, caption, "image")


def audio_prompt(
    vocab: VocabLayout, tokenizer: DiscreteTokenizer, caption: str | None
) -> list[int]:
    return generate_prompt(vocab, tokenizer, caption, "audio")


def frame_ids(vocab: VocabLayout, modality: str, codes: torch.Tensor) -> list[int]:
    """Codes (frames, K) of a K-codebook tokenizer -> global ids, frame-major."""
    codes = codes.long().reshape(codes.shape[0], -1)
    starts = torch.tensor([vocab.range(modality, k).start for k in range(codes.shape[1])])
    for k in range(codes.shape[1]):
        vocab.to_global(modality, k, codes[:, k])  # range check per codebook
    return (codes + starts).flatten().tolist()


def frame_codes(vocab: VocabLayout, modality: str, ids, levels: int) -> torch.Tensor:
    """The inverse of `frame_ids`: global ids of whole frames -> local codes (frames, K),
    or (frames,) for a one-codebook tokenizer (the shape its decode takes)."""
    starts = torch.tensor([vocab.range(modality, k).start for k in range(levels)])
    codes = torch.as_tensor(ids, dtype=torch.long).reshape(-1, levels) - starts
    return codes[:, 0] if levels == 1 else codes


def frame_spans(vocab: VocabLayout, tokenizer: DiscreteTokenizer, modality: str):
    """Global [lo, hi) ids a generator may sample at each step of a frame."""
    lo, hi = tokenizer.sample_range
    spans = []
    for k in range(tokenizer.num_codebooks):
        start = vocab.range(modality, k).start
        spans.append((start + lo, start + min(hi, tokenizer.codebook_sizes[k])))
    return spans


def audio_document(
    vocab: VocabLayout, tokenizer: DiscreteTokenizer, caption: str | None, codes: torch.Tensor
) -> list[int]:
    """A training sequence: the audio prompt, the clip's frames, then the closing tokens."""
    return [
        *audio_prompt(vocab, tokenizer, caption),
        *frame_ids(vocab, "audio", codes),
        vocab.special("<end_audio>"),
        vocab.special("<eos>"),
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


LATENT_PLACEHOLDER = "<unk>"  # the id at continuous positions (its embedding is replaced)


def to_cells(latents: torch.Tensor, grid: tuple[int, int], k: int) -> torch.Tensor:
    """Raster latents [..., h*w, C] -> k x k cells [..., (h/k)*(w/k), k*k*C] (xAR's next-X
    units), cells in raster order, each cell's latents in raster order within it."""
    h, w = grid
    if h % k or w % k:
        raise ValueError(f"cells of {k}x{k} do not tile a {h}x{w} latent grid")
    *lead, n, c = latents.shape
    x = latents.reshape(*lead, h // k, k, w // k, k, c)
    x = x.movedim(-3, -4)  # [..., h/k, w/k, k, k, C]
    return x.reshape(*lead, (h // k) * (w // k), k * k * c)


def from_cells(cells: torch.Tensor, grid: tuple[int, int], k: int) -> torch.Tensor:
    """The inverse of `to_cells`: [..., (h/k)*(w/k), k*k*C] -> raster [..., h*w, C]."""
    h, w = grid
    *lead, n, width = cells.shape
    c = width // (k * k)
    x = cells.reshape(*lead, h // k, w // k, k, k, c).movedim(-4, -3)
    return x.reshape(*lead, h * w, c)


def latent_image_document(
    vocab: VocabLayout, tokenizer: DiscreteTokenizer, caption: str | None, positions: int
) -> tuple[list[int], list[int]]:
    """A training sequence for a continuous image: (ids, indices of its vector positions)."""
    prompt = image_prompt(vocab, tokenizer, caption)
    placeholder = vocab.special(LATENT_PLACEHOLDER)
    ids = [
        *prompt,
        *[placeholder] * positions,
        vocab.special("<end_image>"),
        vocab.special("<eos>"),
    ]
    return ids, list(range(len(prompt), len(prompt) + positions))
