"""Tokenizers: one per modality, saved as card folders and loaded by their "type"."""

from __future__ import annotations

from pathlib import Path

from mmntp.tokenizers.audio_cochlear import CochlearTokenizer
from mmntp.tokenizers.audio_codec import CodecTokenizer
from mmntp.tokenizers.base import (
    ContinuousTokenizer,
    DiscreteTokenizer,
    Encoded,
    MissingFileError,
    ModelLoadError,
    StreamDecoder,
    Tokenizer,
    build_tokenizer,
    check_tokenizer_card,
    load_tokenizer,
    register_tokenizer,
    registered_types,
)
from mmntp.tokenizers.image import VQImageTokenizer
from mmntp.tokenizers.image_kl import KLImageTokenizer
from mmntp.tokenizers.text import BYTES_CARD, ByteTokenizer, HFTextTokenizer
from mmntp.tokenizers.timeseries import CHRONOS_4096_CARD, MeanScaleUniformBins

# The committed card folders under <repo>/tokenizers/, as (builder, card text).
BUILTIN_CARDS = {
    "text-bytes": (ByteTokenizer, BYTES_CARD),
    "chronos-4096": (MeanScaleUniformBins, CHRONOS_4096_CARD),
}


def write_builtin_cards(root: str | Path) -> list[Path]:
    """(Re)writes every built-in card folder under `root`; returns the folders written."""
    written = []
    for name, (build, card) in BUILTIN_CARDS.items():
        directory = Path(root) / name
        build().save(directory, card=card)
        written.append(directory)
    return written


__all__ = [
    "BUILTIN_CARDS",
    "ByteTokenizer",
    "CochlearTokenizer",
    "CodecTokenizer",
    "ContinuousTokenizer",
    "DiscreteTokenizer",
    "Encoded",
    "HFTextTokenizer",
    "KLImageTokenizer",
    "MeanScaleUniformBins",
    "MissingFileError",
    "ModelLoadError",
    "StreamDecoder",
    "Tokenizer",
    "VQImageTokenizer",
    "build_tokenizer",
    "check_tokenizer_card",
    "load_tokenizer",
    "register_tokenizer",
    "registered_types",
    "write_builtin_cards",
]
