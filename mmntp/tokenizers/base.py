"""Tokenizer interface, the type registry, and the card-folder format.

A card folder holds `config.json` ("type", "modality", "kind" + the constructor args),
`tokenizer.safetensors` (weights/buffers, possibly none) and `CARD.md`; a tokenizer may add
files of its own (a Hugging Face `tokenizer.json`), named in its config.
"""

from __future__ import annotations

import json
import math
import os
import struct
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mmntp.api.errors import FieldError

CONFIG_FILE = "config.json"
TENSORS_FILE = "tokenizer.safetensors"
CARD_FILE = "CARD.md"
_RESERVED_KEYS = ("type", "modality", "kind")


# -- reading folders that may come from anyone -------------------------------------------
#
# Model folders and their tokenizer cards are read as untrusted input: every path they
# name must resolve inside the folder (or an allowed root), JSON files are size-capped,
# UTF-8 objects, and a safetensors header is checked against the file before any tensor
# is read. Every problem raises `ModelLoadError`: one line naming the file and the field.

MAX_JSON_BYTES = 16 << 20  # a config.json; the bundled model's is 5 KB
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit for its JSON header
_ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


class ModelLoadError(ValueError):
    """A model or tokenizer folder that cannot be loaded.

    `path` is the file (or folder) at fault, `field` the place in it ("model.rope_theta",
    "tokenizers.text", a tensor name; "" = the file as a whole), `problem` what is wrong.
    `str()` is one line, "PATH: FIELD: PROBLEM", fit for a command's error output; it
    never says whether a path outside the folder exists.
    """

    def __init__(self, path: str | Path, field: str, problem: str) -> None:
        self.path, self.field, self.problem = str(path), field, problem
        line = f"{self.path}: {field}: {problem}" if field else f"{self.path}: {problem}"
        super().__init__(line.replace("\r", " ").replace("\n", " "))

    def __str__(self) -> str:
        return self.args[0]


class MissingFileError(ModelLoadError, FileNotFoundError):
    """A file the folder must hold is absent (also a FileNotFoundError)."""


def resolve_inside(
    base: str | Path, name: Any, roots: Iterable[str | Path], where: str | Path, field: str
) -> Path:
    """`base / name`, resolved (symlinks followed), if it lies inside one of `roots`;
    otherwise ModelLoadError naming `where` and `field`. Nothing is opened or tested for
    existence first, so the error says the same for a path that exists and one that does
    not."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ModelLoadError(where, field, f"must be a relative path, got {name!r:.60}")
    resolved = Path(os.path.realpath(Path(base) / name))
    for root in roots:
        if resolved.is_relative_to(os.path.realpath(root)):
            return resolved
    raise ModelLoadError(where, field, f"{name!r:.60} points outside the folder; refused")


def read_json_object(path: str | Path, field: str = "") -> dict[str, Any]:
    """A JSON object from a file, or ModelLoadError saying why not (too big, not UTF-8,
    not JSON, not an object)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, field, "is missing")
    with path.open("rb") as f:
        raw = f.read(MAX_JSON_BYTES + 1)
    if len(raw) > MAX_JSON_BYTES:
        raise ModelLoadError(path, field, f"is larger than {MAX_JSON_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ModelLoadError(path, field, f"is not UTF-8 text (byte {err.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ModelLoadError(
            path, field, f"is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"
        ) from None
    except RecursionError:
        raise ModelLoadError(path, field, "is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        kind = {list: "a list", str: "a string"}.get(type(data), type(data).__name__)
        raise ModelLoadError(path, field, f"must hold a JSON object, got {kind}")
    return data


def safetensors_shapes(path: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{name: (dtype, shape)} from a safetensors file's header, checked against the file
    (every tensor's bytes lie in it, none overlap the header): no tensor is read. Raises
    ModelLoadError naming the file and the tensor."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "", "is missing")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelLoadError(path, "", f"is truncated: {size} bytes, not a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise ModelLoadError(
                path, "", f"is truncated or not safetensors: header of {n} bytes, file {size}"
            )
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ModelLoadError(path, "", "is not a safetensors file: unreadable header") from None
    if not isinstance(header, dict):
        raise ModelLoadError(path, "", "is not a safetensors file: header is not an object")
    data_bytes = size - 8 - n
    shapes, end = {}, 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, stop) = entry["dtype"], entry["shape"], entry["data_offsets"]
            ok = dtype in _ITEMSIZE and all(isinstance(d, int) and d >= 0 for d in shape)
            ok = ok and isinstance(begin, int) and isinstance(stop, int) and 0 <= begin <= stop
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise ModelLoadError(path, name, "malformed tensor entry in the header")
        if stop - begin != math.prod(shape) * _ITEMSIZE[dtype]:
            raise ModelLoadError(path, name, f"{stop - begin} bytes for shape {list(shape)}")
        shapes[name] = (dtype, tuple(shape))
        end = max(end, stop)
    if end > data_bytes:
        raise ModelLoadError(
            path,
            "",
            f"is truncated: the header needs {end} bytes of data, the file holds {data_bytes}",
        )
    return shapes


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """`safetensors.torch.load_file` after `safetensors_shapes` checked the header; any
    error left (a corrupt file) becomes ModelLoadError."""
    safetensors_shapes(path)
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise ModelLoadError(path, "", f"cannot be read: {err}") from None


@dataclass
class Encoded:
    """One encoded signal.

    `codes`: discrete tokenizers give a LongTensor of local codes shaped (T,) for one
    codebook or (T, K) for K codebooks; continuous ones a FloatTensor (T, latent_dim).
    `state`: whatever `decode` needs besides the codes (time series: {"scale": float}).
    """

    codes: torch.Tensor
    state: dict[str, Any] = field(default_factory=dict)


class StreamDecoder(ABC):
    """Decodes codes as they are generated; the pieces joined equal the one-shot decode."""

    @abstractmethod
    def push(self, codes: torch.Tensor) -> Any:
        """Takes new codes and returns the output they make decodable (text: a str delta)."""

    @abstractmethod
    def flush(self) -> Any:
        """Returns whatever is still held back; call once, at the end of the stream."""


class Tokenizer(ABC):
    """Maps one modality's signal to codes (or latents) and back."""

    type_name: ClassVar[str]
    modality: ClassVar[str]  # "text" | "image" | "audio" | "timeseries" | "motion"
    kind: ClassVar[str]  # "discrete" | "continuous"
    frame_rate: float | None = None  # tokens per second of signal, where that means anything
    # Config keys that name a file of the card folder (checked to resolve inside it).
    file_fields: ClassVar[tuple[str, ...]] = ()
    card_text: str | None = None  # the CARD.md it was loaded with; save() writes it back

    @abstractmethod
    def encode(self, x: Any, state: dict[str, Any] | None = None) -> Encoded:
        """Turns one signal into codes; `state` reuses a previous `Encoded.state`."""

    @abstractmethod
    def decode(self, codes: torch.Tensor, state: dict[str, Any] | None = None) -> Any:
        """Turns codes (shaped as in `Encoded.codes`) back into a signal."""

    @abstractmethod
    def stream_decoder(self, state: dict[str, Any] | None = None) -> StreamDecoder:
        """A fresh decoder for one stream (one per in-flight request)."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments, without "type"."""

    def tensors(self) -> dict[str, torch.Tensor]:
        """Weights and buffers to save alongside the config."""
        return {}

    def code_identity(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """(config, tensors) that decide which code an input gets. Two tokenizers that agree
        on these give the same codes, so a model's rows for those codes stay valid
        (`model.init_from`). All of both unless a tokenizer's decoder is separate: then a
        retrained decoder keeps the codes."""
        return self.config(), self.tensors()

    @classmethod
    @abstractmethod
    def from_config(
        cls,
        config: dict[str, Any],
        tensors: dict[str, torch.Tensor],
        directory: Path | None = None,
    ) -> Tokenizer:
        """Rebuilds the tokenizer; `directory` is the card folder, for extra files."""

    def save(self, directory: str | Path, card: str | None = None) -> None:
        """Writes the card folder: config.json, tokenizer.safetensors and CARD.md."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = self.config()
        clash = [key for key in _RESERVED_KEYS if key in config]
        if clash:
            raise ValueError(f"{type(self).__name__}.config() must not contain {clash}")
        full = {"type": self.type_name, "modality": self.modality, "kind": self.kind, **config}
        (directory / CONFIG_FILE).write_text(json.dumps(full, indent=2) + "\n")
        tensors = {name: t.detach().cpu().contiguous() for name, t in self.tensors().items()}
        save_file(tensors, str(directory / TENSORS_FILE))
        # A tokenizer loaded from a card folder keeps that card's text (a model export
        # copies its tokenizers' real cards, not a stub); a new one gets the generic card.
        text = card if card is not None else self.card_text
        text = text if text is not None else self._auto_card(full)
        (directory / CARD_FILE).write_text(text if text.endswith("\n") else text + "\n")

    def _auto_card(self, full_config: dict[str, Any]) -> str:
        return (
            f"# {self.type_name}\n\n"
            f"{type(self).__name__}: a {self.kind} {self.modality} tokenizer.\n\n"
            f"```json\n{json.dumps(full_config, indent=2)}\n```\n"
        )


class DiscreteTokenizer(Tokenizer):
    """A tokenizer whose codes are integers in per-codebook local code spaces."""

    kind: ClassVar[str] = "discrete"
    num_codebooks: int
    codebook_sizes: list[int]  # local code space of each codebook
    sample_range: tuple[int, int]  # [lo, hi) local codes a generator may sample


class ContinuousTokenizer(Tokenizer):
    """A tokenizer whose "codes" are real vectors (T, latent_dim)."""

    kind: ClassVar[str] = "continuous"
    latent_dim: int


_REGISTRY: dict[str, type[Tokenizer]] = {}


def register_tokenizer(cls: type[Tokenizer]) -> type[Tokenizer]:
    """Class decorator: makes `load_tokenizer` build `cls` for config "type" == cls.type_name."""
    name = getattr(cls, "type_name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__name__} needs a non-empty str type_name to be registered")
    existing = _REGISTRY.get(name)
    # Same qualified name = the same class re-imported (e.g. importlib.reload), not a clash.
    if existing is not None and (existing.__module__, existing.__qualname__) != (
        cls.__module__,
        cls.__qualname__,
    ):
        raise ValueError(f"tokenizer type {name!r} is already registered by {existing.__name__}")
    _REGISTRY[name] = cls
    return cls


def registered_types() -> list[str]:
    """The "type" names `load_tokenizer` knows."""
    return sorted(_REGISTRY)


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Builds the tokenizer saved in a card folder (tensors via safetensors, never pickle)."""
    return build_tokenizer(directory, *check_tokenizer_card(directory))


def build_tokenizer(
    directory: str | Path, cls: type[Tokenizer], config: dict[str, Any]
) -> Tokenizer:
    """The tokenizer of a card `check_tokenizer_card` already checked (its result)."""
    directory = Path(directory)
    check_card_shapes(directory, cls, config)
    tensors = load_tensors(directory / TENSORS_FILE)
    tok = _from_config(directory, cls, config, tensors)
    card = directory / CARD_FILE
    tok.card_text = card.read_text(errors="replace") if card.is_file() else None
    return tok


def _from_config(
    directory: Path, cls: type[Tokenizer], config: dict[str, Any], tensors: dict[str, Any]
) -> Tokenizer:
    try:
        return cls.from_config(config, tensors, directory)
    except ModelLoadError:
        raise
    except FieldError as err:  # a config value the tokenizer checked: its key is the field
        raise ModelLoadError(directory / CONFIG_FILE, err.field, err.problem) from None
    except (ValueError, TypeError, KeyError) as err:
        problem = " ".join(str(err).split())[:300]
        raise ModelLoadError(directory / CONFIG_FILE, "", problem) from None


def check_card_shapes(directory: Path, cls: type[Tokenizer], config: dict[str, Any]) -> None:
    """The tensors a card's config implies (the tokenizer built on the meta device: no
    memory, whatever sizes the config names) against its safetensors header, so a 1 KB
    config cannot make the real build allocate gigabytes. A card without tensors, or a
    tokenizer that cannot be built on the meta device or without its tensors, is left to
    the real build."""
    shapes = safetensors_shapes(directory / TENSORS_FILE)
    if not shapes:
        return
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            shell = cls.from_config(config, {}, directory)
            expected = {k: tuple(v.shape) for k, v in shell.tensors().items()}
    except Exception:  # noqa: BLE001 - not buildable this way (needs data or its tensors):
        return  # the real build below checks the config and reports its errors
    path = directory / TENSORS_FILE
    for name, shape in expected.items():
        if name in shapes and shapes[name][1] != shape:
            raise ModelLoadError(
                path, name, f"shape {list(shapes[name][1])} but the config implies {list(shape)}"
            )


def check_tokenizer_card(
    directory: str | Path, roots: Iterable[str | Path] | None = None
) -> tuple[type[Tokenizer], dict[str, Any]]:
    """What `load_tokenizer` checks before building anything (cheap: one small JSON file
    and a safetensors header): the folder, its config (a registered type whose modality
    and kind match) and its tensors file -> (class, the config's build arguments). The
    card's files must resolve inside the card folder or `roots` (a symlink out is
    refused). Raises ModelLoadError (MissingFileError for a missing file) naming the
    problem."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MissingFileError(directory, "", "tokenizer folder does not exist")
    roots = [directory, *(roots or ())]
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise MissingFileError(directory, "", f"tokenizer folder has no {CONFIG_FILE}")
    for name in (CONFIG_FILE, TENSORS_FILE, CARD_FILE):
        resolve_inside(directory, name, roots, directory / name, "")
    config = read_json_object(config_path)
    if "type" not in config:
        raise ModelLoadError(config_path, "type", 'has no "type" key')
    type_name = config.pop("type")
    cls = _REGISTRY.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise ModelLoadError(
            config_path,
            "type",
            f"unknown tokenizer type {type_name!r:.60}; known: {registered_types()}",
        )
    for key in ("modality", "kind"):
        value = config.pop(key, getattr(cls, key))
        if value != getattr(cls, key):
            raise ModelLoadError(
                config_path,
                key,
                f"{key} {value!r:.60} does not match {cls.__name__}.{key} {getattr(cls, key)!r}",
            )
    for key in cls.file_fields:
        if key in config:
            resolve_inside(directory, config[key], [directory], config_path, key)
    if not (directory / TENSORS_FILE).is_file():
        raise MissingFileError(directory, "", f"tokenizer folder has no {TENSORS_FILE}")
    safetensors_shapes(directory / TENSORS_FILE)
    return cls, config


def as_codes(codes: Any, size: int, what: str) -> torch.Tensor:
    """Validates integer codes in [0, size) and returns them as a LongTensor (same shape)."""
    codes = torch.as_tensor(codes)
    if codes.numel() == 0:  # torch.as_tensor([]) is float32: an empty list is still valid
        return codes.long()
    if codes.dtype == torch.bool or codes.is_floating_point() or codes.is_complex():
        raise ValueError(f"{what}: codes must be an integer tensor, got dtype {codes.dtype}")
    codes = codes.long()
    if int(codes.min()) < 0 or int(codes.max()) >= size:
        raise ValueError(
            f"{what}: codes must lie in [0, {size}), got range "
            f"[{int(codes.min())}, {int(codes.max())}]"
        )
    return codes


def check_tensors(expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], what: str):
    """ValueError naming the missing / unexpected / misshapen tensors of a card's weights."""
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    bad = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or extra or bad:
        raise ValueError(
            f"{what}: weights do not match the config (missing {missing[:5]}, unexpected "
            f"{extra[:5]}, wrong shape {bad[:5]})"
        )


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], what: str) -> None:
    """Loads a full state dict, naming missing / unexpected / misshapen tensors on failure."""
    check_tensors(model.state_dict(), tensors, what)
    model.load_state_dict(tensors)


class AutoencoderCard:
    """Card plumbing shared by tokenizers whose weights are one `self.model` autoencoder."""

    model: nn.Module

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.model.state_dict())

    def num_parameters(self) -> int:
        """Parameters of the autoencoder (a VQ codebook included)."""
        return sum(p.numel() for p in self.model.parameters())

    @classmethod
    def from_config(
        cls,
        config: dict[str, Any],
        tensors: dict[str, torch.Tensor],
        directory: Path | None = None,
    ):
        try:
            tok = cls(**config)
        except TypeError as err:
            raise ValueError(f"{cls.__name__}: bad config {config}: {err}") from err
        if tensors:
            load_weights(tok.model, tensors, cls.__name__)
        return tok
