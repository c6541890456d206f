"""Text tokenizers: raw UTF-8 bytes, and a wrapper over a Hugging Face `tokenizers` file."""

from __future__ import annotations

import codecs
import os
from pathlib import Path
from typing import Any, ClassVar

import tokenizers
import torch

from mmntp.tokenizers.base import (
    CONFIG_FILE,
    DiscreteTokenizer,
    Encoded,
    ModelLoadError,
    StreamDecoder,
    as_codes,
    register_tokenizer,
    resolve_inside,
)

BYTES_CARD = """\
# text-bytes

UTF-8 byte tokenizer (`ByteTokenizer`, type `text_bytes`).

- Codes: the UTF-8 bytes of the text, one code per byte, local code space [0, 256);
  a generator may sample all 256 codes.
- No special tokens, no vocabulary file, no weights (`tokenizer.safetensors` is empty).
- Decoding replaces invalid UTF-8 with U+FFFD. The stream decoder holds back a
  multi-byte character until all its bytes have arrived, so streamed text equals
  one-shot text.
- Input must be a `str`.
"""


def _text_codes(codes: Any, size: int, what: str) -> torch.Tensor:
    """Codes for one text stream as a (T,) LongTensor; a 0-d tensor counts as one code."""
    codes = as_codes(codes, size, what)
    if codes.dim() > 1:
        raise ValueError(f"{what}: text codes must be 0-d or 1-D, got shape {tuple(codes.shape)}")
    return codes.reshape(-1)


def _require_str(x: Any, what: str) -> str:
    if not isinstance(x, str):
        raise ValueError(f"{what}: input must be a str, got {type(x).__name__}")
    return x


@register_tokenizer
class ByteTokenizer(DiscreteTokenizer):
    """Text as its UTF-8 bytes: codes (T,) in [0, 256)."""

    type_name: ClassVar[str] = "text_bytes"
    modality: ClassVar[str] = "text"
    num_codebooks = 1
    codebook_sizes = [256]
    sample_range = (0, 256)

    def encode(self, x: str, state: dict[str, Any] | None = None) -> Encoded:
        """A str -> Encoded with codes (T,) LongTensor, T = number of UTF-8 bytes."""
        data = _require_str(x, "ByteTokenizer.encode").encode("utf-8")
        return Encoded(torch.tensor(list(data), dtype=torch.long), {})

    def decode(self, codes: torch.Tensor, state: dict[str, Any] | None = None) -> str:
        """Codes (T,) -> str; invalid UTF-8 becomes U+FFFD."""
        codes = _text_codes(codes, 256, "ByteTokenizer.decode")
        return bytes(codes.tolist()).decode("utf-8", errors="replace")

    def stream_decoder(self, state: dict[str, Any] | None = None) -> ByteStreamDecoder:
        return ByteStreamDecoder()

    def config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(
        cls,
        config: dict[str, Any],
        tensors: dict[str, torch.Tensor],
        directory: Path | None = None,
    ) -> ByteTokenizer:
        if config:
            raise ValueError(f"ByteTokenizer takes no config, got keys {sorted(config)}")
        return cls()


class ByteStreamDecoder(StreamDecoder):
    """Bytes in, str deltas out; an incomplete multi-byte character waits for its rest."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, codes: torch.Tensor) -> str:
        codes = _text_codes(codes, 256, "ByteStreamDecoder.push")
        return self._decoder.decode(bytes(codes.tolist()))

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


@register_tokenizer
class HFTextTokenizer(DiscreteTokenizer):
    """A Hugging Face `tokenizers` model: codes (T,) are its token ids.

    Encoding adds no special tokens; decoding skips them. The card folder keeps the
    model as `tokenizer.json` (named by config "tokenizer_file").
    """

    type_name: ClassVar[str] = "text_hf"
    modality: ClassVar[str] = "text"
    num_codebooks = 1
    tokenizer_file = "tokenizer.json"
    file_fields: ClassVar[tuple[str, ...]] = ("tokenizer_file",)

    def __init__(self, tokenizer: tokenizers.Tokenizer) -> None:
        self.hf = tokenizer
        size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.codebook_sizes = [size]
        self.sample_range = (0, size)

    @classmethod
    def from_file(cls, path: str | Path) -> HFTextTokenizer:
        """Loads a `tokenizer.json` written by the `tokenizers` library."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Hugging Face tokenizer file {str(path)!r} does not exist")
        try:
            hf = tokenizers.Tokenizer.from_file(str(path))
        except Exception as err:  # the tokenizers library raises plain Exception
            problem = f"is not a Hugging Face tokenizer file ({' '.join(str(err).split())[:200]})"
            raise ModelLoadError(path, "", problem) from None
        return cls(hf)

    def encode(self, x: str, state: dict[str, Any] | None = None) -> Encoded:
        """A str -> Encoded with codes (T,) LongTensor of token ids."""
        text = _require_str(x, "HFTextTokenizer.encode")
        ids = self.hf.encode(text, add_special_tokens=False).ids
        return Encoded(torch.tensor(ids, dtype=torch.long), {})

    def decode(self, codes: torch.Tensor, state: dict[str, Any] | None = None) -> str:
        """Codes (T,) -> str."""
        codes = _text_codes(codes, self.codebook_sizes[0], "HFTextTokenizer.decode")
        return self.hf.decode(codes.tolist(), skip_special_tokens=True)

    def stream_decoder(self, state: dict[str, Any] | None = None) -> HFStreamDecoder:
        return HFStreamDecoder(self)

    def config(self) -> dict[str, Any]:
        return {"tokenizer_file": self.tokenizer_file}

    def save(self, directory: str | Path, card: str | None = None) -> None:
        super().save(directory, card)
        self.hf.save(str(Path(directory) / self.tokenizer_file))

    @classmethod
    def from_config(
        cls,
        config: dict[str, Any],
        tensors: dict[str, torch.Tensor],
        directory: Path | None = None,
    ) -> HFTextTokenizer:
        if set(config) != {"tokenizer_file"}:
            raise ValueError(f"HFTextTokenizer config needs exactly 'tokenizer_file', got {config}")
        if directory is None:
            raise ValueError("HFTextTokenizer.from_config needs the card folder (directory)")
        # The card names the file: it must lie in the card folder (never "/etc/passwd").
        where = Path(directory) / CONFIG_FILE
        name = config["tokenizer_file"]
        return cls.from_file(resolve_inside(directory, name, [directory], where, "tokenizer_file"))


class HFStreamDecoder(StreamDecoder):
    """Decodes all ids so far and emits the new stable suffix.

    Text ending in U+FFFD is held back: it is usually a character whose bytes are split
    across tokens. Re-decoding everything costs O(T) per push, fine at chat lengths.
    Pieces joined equal the one-shot decode whenever the model's decoder only appends to
    earlier text (byte-level BPE, Metaspace, WordPiece, BPE suffixes do). Emitted text
    cannot be taken back, so if a decoder rewrites it, the text from the first changed
    character on is emitted again rather than stalling the stream.
    """

    def __init__(self, tokenizer: HFTextTokenizer) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._emitted = ""

    def push(self, codes: torch.Tensor) -> str:
        size = self._tokenizer.codebook_sizes[0]
        self._ids.extend(_text_codes(codes, size, "HFStreamDecoder.push").tolist())
        text = self._tokenizer.hf.decode(self._ids, skip_special_tokens=True)
        return "" if text.endswith("\ufffd") else self._emit(text)

    def flush(self) -> str:
        return self._emit(self._tokenizer.hf.decode(self._ids, skip_special_tokens=True))

    def _emit(self, text: str) -> str:
        if text.startswith(self._emitted):
            start = len(self._emitted)
        else:
            start = len(os.path.commonprefix([text, self._emitted]))
        self._emitted = text
        return text[start:]
