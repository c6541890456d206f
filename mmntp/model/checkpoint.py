"""Model folders: `config.json` + `model.safetensors` (+ `tokenizers/<key>/` cards).

Nothing here unpickles: weights go through safetensors, everything else is JSON. A folder
is read as untrusted: `load_model` checks every config field's type and range, resolves
every path inside the folder (or `tokenizers_root`), and compares the shapes the config
implies (a model built on the meta device) with the safetensors header before anything is
allocated; every problem is one `ModelLoadError` naming the file and the field.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from mmntp.model.config import FieldError, ModelConfig
from mmntp.model.heads import head_from_spec
from mmntp.model.transformer import Transformer
from mmntp.model.vocab import VocabLayout
from mmntp.tokenizers import Tokenizer, build_tokenizer, check_tokenizer_card
from mmntp.tokenizers.base import (
    MissingFileError,
    ModelLoadError,
    load_tensors,
    read_json_object,
    resolve_inside,
    safetensors_shapes,
)

FORMAT = "mmntp-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
TIED_KEY = "heads.token.proj.weight"
# A folder of tokenizer cards that model configs may name besides their own folder
# (`load_model(tokenizers_root=...)` wins over it).
TOKENIZERS_ROOT_ENV = "MMNTP_TOKENIZERS_ROOT"

__all__ = [
    "FORMAT",
    "LazyTokenizers",
    "MissingFileError",
    "ModelBundle",
    "ModelLoadError",
    "WEIGHTS",
    "load_model",
    "read_config",
    "relative_paths",
    "save_model",
]


class LazyTokenizers(Mapping[str, Tokenizer]):
    """A model folder's tokenizers, each built the first time it is looked up.

    Building one can take seconds (the image-latent card imports diffusers' autoencoders:
    5 of the bundled forecast command's 6 s), and most requests need one or two
    modalities. Every card is checked when the model loads (`check_tokenizer_card`), so a
    missing or malformed card still fails there; membership (`"image" in tokenizers`) never
    builds one; a server builds them all before it reports SERVING.
    """

    def __init__(self, cards: Mapping[str, Path], roots: list[Path] | None = None) -> None:
        # (folder, class, build arguments) per key: checked now, built on first lookup.
        # A card's files must resolve inside `roots` too (the model folder and the
        # tokenizers root), so a symlink cannot lead out of them.
        self._cards = {k: (path, *check_tokenizer_card(path, roots)) for k, path in cards.items()}
        self._built: dict[str, Tokenizer] = {}
        self._lock = threading.Lock()  # request threads may ask for the same one at once

    def __getitem__(self, key: str) -> Tokenizer:
        tok = self._built.get(key)
        if tok is None:
            with self._lock:
                tok = self._built.get(key)
                if tok is None:
                    path, cls, config = self._cards[key]
                    tok = self._built[key] = build_tokenizer(path, cls, dict(config))
        return tok

    def __iter__(self) -> Iterator[str]:
        return iter(self._cards)

    def __len__(self) -> int:
        return len(self._cards)

    def __contains__(self, key: object) -> bool:
        return key in self._cards


@dataclass
class ModelBundle:
    """A loaded model folder: weights, its vocabulary and the tokenizers it was trained with."""

    model: Transformer
    vocab: VocabLayout
    tokenizers: Mapping[str, Tokenizer] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  # free-form (training recipe, data)
    path: Path | None = None


def save_model(
    directory: str | Path,
    model: Transformer,
    vocab: VocabLayout,
    tokenizers: dict[str, Tokenizer] | None = None,
    meta: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a model folder; `dtype` optionally narrows the stored weights (e.g. bf16)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # An old config.json goes first and the new one comes last, each file whole (written
    # beside, then renamed): a folder with a config.json is complete (what
    # `mmntp.train.curriculum.model_complete` checks).
    (directory / "config.json").unlink(missing_ok=True)
    if vocab.size != model.config.vocab_size:
        raise ValueError(
            f"vocabulary size {vocab.size} != model vocab_size {model.config.vocab_size}"
        )
    refs = {}
    for key, tok in (tokenizers or {}).items():
        refs[key] = f"tokenizers/{key}"
        tok.save(directory / refs[key])
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model.config.to_dict(),
        "vocab": vocab.to_dict(),
        "tokenizers": refs,
        "meta": relative_paths(meta or {}, directory),
    }
    heads = head_specs(model)
    if heads:  # only then: folders without extra heads stay byte-for-byte as before
        config["heads"] = heads
    state = {}
    for name, tensor in model.state_dict().items():
        if name == TIED_KEY and model.config.tie_embeddings:
            continue  # shared with tok_embeddings.weight; safetensors refuses aliases
        state[name] = tensor.detach().to(dtype or tensor.dtype).contiguous().cpu()
    weights = directory / (WEIGHTS + ".tmp")
    save_file(state, str(weights), metadata={"format": FORMAT})
    weights.replace(directory / WEIGHTS)
    config_tmp = directory / "config.json.tmp"
    config_tmp.write_text(json.dumps(config, indent=2) + "\n")
    config_tmp.replace(directory / "config.json")
    return directory


def head_specs(model: Transformer) -> dict[str, dict[str, Any]]:
    """{name: spec} of every head besides "token", so `load_model` can rebuild them."""
    specs = {}
    for name, head in model.heads.items():
        if name == "token":
            continue  # always built from the model config
        if not callable(getattr(head, "spec", None)):
            raise ValueError(
                f"head {name!r} ({type(head).__name__}) has no spec(): a saved folder could "
                "not rebuild it"
            )
        specs[name] = head.spec()
    return specs


def add_saved_heads(model: Transformer, heads: dict[str, Any], where: str) -> None:
    """Rebuild the heads listed in config.json "heads" (weights come with the state dict)."""
    if not isinstance(heads, dict):
        raise ValueError(f"{where}: heads must be a dict, got {type(heads).__name__}")
    for name, spec in heads.items():
        head = head_from_spec(spec, f"{where}: heads[{name!r}]")
        if head.cond_dim != model.config.dim:
            raise ValueError(
                f"{where}: heads[{name!r}] cond_dim={head.cond_dim} != model dim {model.config.dim}"
            )
        model.add_head(name, head)


def relative_paths(value: Any, directory: Path) -> Any:
    """`value` (JSON-able meta) with every absolute path string made relative to the
    model folder: a shipped folder must not carry the build machine's paths."""
    if isinstance(value, dict):
        return {k: relative_paths(v, directory) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [relative_paths(v, directory) for v in value]
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str) and os.path.isabs(value) and "\n" not in value:
        return os.path.relpath(value, os.path.abspath(directory))
    return value


def read_config(directory: str | Path) -> dict[str, Any]:
    """config.json of a model folder, with its format tag and top-level layout checked
    (the fields themselves are checked by `load_model`). Raises ModelLoadError."""
    directory = Path(directory)
    path = directory / "config.json"
    if not directory.is_dir():
        raise MissingFileError(directory, "", "model folder does not exist")
    if not path.is_file():
        raise MissingFileError(directory, "", "not a model folder: no config.json")
    resolve_inside(directory, "config.json", [directory], path, "")
    config = read_json_object(path)
    if config.get("format") != FORMAT:
        raise ModelLoadError(
            path, "format", f"not an mmntp model config (format={config.get('format')!r:.60})"
        )
    version = config.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ModelLoadError(path, "format_version", f"must be an integer, got {version!r:.60}")
    if version > FORMAT_VERSION:
        raise ModelLoadError(
            path, "format_version", f"{version} is newer than this mmntp ({FORMAT_VERSION})"
        )
    for key, kind in (("model", dict), ("vocab", dict), ("tokenizers", dict)):
        if key not in config:
            raise ModelLoadError(path, key, "is missing")
        if not isinstance(config[key], kind):
            raise ModelLoadError(path, key, "must be a JSON object")
    for key in ("meta", "heads"):
        if not isinstance(config.get(key, {}), dict):
            raise ModelLoadError(path, key, "must be a JSON object")
    return config


def _field(path: Path, prefix: str, err: FieldError) -> ModelLoadError:
    where = f"{prefix}.{err.field}" if err.field else prefix
    return ModelLoadError(path, where, err.problem)


def _tokenizer_roots(directory: Path, tokenizers_root: str | Path | None) -> list[Path]:
    root = tokenizers_root if tokenizers_root is not None else os.environ.get(TOKENIZERS_ROOT_ENV)
    return [directory, *([Path(root)] if root else [])]


def check_weights(
    model: Transformer, shapes: dict[str, tuple[str, tuple[int, ...]]], weights: Path, config: Path
) -> None:
    """The state dict a (meta-device) model expects against a safetensors header: a
    vocabulary size the embedding disagrees with names the config field; any other
    missing, unexpected or misshapen tensor names the tensor."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        expected.pop(TIED_KEY, None)
    emb = shapes.get("tok_embeddings.weight")
    if emb is not None and len(emb[1]) == 2 and emb[1][0] != model.config.vocab_size:
        raise ModelLoadError(
            config,
            "model.vocab_size",
            f"{model.config.vocab_size} but tok_embeddings.weight in {WEIGHTS} has "
            f"{emb[1][0]} rows",
        )
    for name, shape in expected.items():
        if name not in shapes:
            raise ModelLoadError(weights, name, "missing (the config implies it)")
        if shapes[name][1] != shape:
            raise ModelLoadError(
                weights,
                name,
                f"shape {list(shapes[name][1])} but the config implies {list(shape)}",
            )
    extra = sorted(set(shapes) - set(expected))
    if extra:
        raise ModelLoadError(weights, extra[0], "not part of the model the config describes")


def service_model(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(the model folder, the service settings) for a model folder (no settings) or a
    service folder, whose service.json names its model folder.

    service.json is the operator's deployment file, like a command-line argument: it may
    name a model folder anywhere (a shared one, say). The model folder it names is what is
    read as untrusted (`load_model`)."""
    path = Path(path)
    service = path / "service.json"
    if not service.is_file():
        return path, {}
    settings = read_json_object(service)
    model = settings.get("model", "model")
    if not isinstance(model, str) or not model:
        raise ModelLoadError(service, "model", f"must be a folder path, got {model!r:.60}")
    return path / model, settings


def load_model(
    directory: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    tokenizers_root: str | Path | None = None,
) -> ModelBundle:
    """Load a model folder written by `save_model` (or `mmntp import-hf`).

    The folder is untrusted: config values are type- and range-checked, the tensor shapes
    they imply are compared with the safetensors header (nothing is allocated until they
    agree), and tokenizer card paths must resolve inside the folder or inside
    `tokenizers_root` (default: $MMNTP_TOKENIZERS_ROOT, if set). Raises ModelLoadError
    (MissingFileError, also a FileNotFoundError, for a missing file)."""
    directory = Path(directory)
    config = read_config(directory)
    path = directory / "config.json"
    try:
        model_config = ModelConfig.from_dict(config["model"])
    except FieldError as err:
        raise _field(path, "model", err) from None
    try:
        vocab = VocabLayout.from_dict(config["vocab"])
    except FieldError as err:
        raise _field(path, "vocab", err) from None
    if vocab.size != model_config.vocab_size:
        raise ModelLoadError(
            path, "vocab.size", f"{vocab.size} != model.vocab_size {model_config.vocab_size}"
        )
    roots = _tokenizer_roots(directory, tokenizers_root)
    cards = {
        key: resolve_inside(directory, ref, roots, path, f"tokenizers.{key}")
        for key, ref in config["tokenizers"].items()
    }
    weights = directory / WEIGHTS
    resolve_inside(directory, WEIGHTS, [directory], weights, "")
    shapes = safetensors_shapes(weights)
    # The module on the meta device first: its shapes cost nothing, whatever the config.
    with torch.device("meta"):
        shell = Transformer(model_config)
        _add_heads(shell, config.get("heads", {}), path)
    check_weights(shell, shapes, weights, path)
    del shell
    state = load_tensors(weights)
    model = Transformer(model_config)
    _add_heads(model, config.get("heads", {}), path)
    if model_config.tie_embeddings:
        state[TIED_KEY] = state["tok_embeddings.weight"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:  # check_weights found none: kept as the last word
        raise ModelLoadError(
            weights,
            "",
            f"weights do not match the config (missing {missing[:5]}, unexpected {unexpected[:5]})",
        )
    model.to(device=device, dtype=dtype).eval()
    tokenizers = LazyTokenizers(cards, roots)
    meta = config.get("meta", {})
    return ModelBundle(model, vocab, tokenizers, meta, directory)


def _add_heads(model: Transformer, heads: dict[str, Any], path: Path) -> None:
    try:
        add_saved_heads(model, heads, "heads")
    except (ValueError, TypeError, KeyError) as err:
        message = " ".join(str(err).split())
        field, _, problem = message.partition(": ")
        raise ModelLoadError(path, field if problem else "heads", problem or message) from None
