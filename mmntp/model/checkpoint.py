"""Model folders: `config.json` + `model.safetensors` (+ `tokenizers/<key>/` cards).

Nothing here unpickles: weights go through safetensors, everything else is JSON.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mmntp.model.config import ModelConfig
from mmntp.model.heads import head_from_spec
from mmntp.model.transformer import Transformer
from mmntp.model.vocab import VocabLayout
from mmntp.tokenizers import Tokenizer, build_tokenizer, check_tokenizer_card

FORMAT = "mmntp-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
TIED_KEY = "heads.token.proj.weight"


class LazyTokenizers(Mapping[str, Tokenizer]):
    """A model folder's tokenizers, each built the first time it is looked up.

    Building one can take seconds (the image-latent card imports diffusers' autoencoders:
    5 of the bundled forecast command's 6 s), and most requests need one or two
    modalities. Every card is checked when the model loads (`check_tokenizer_card`), so a
    missing or malformed card still fails there; membership (`"image" in tokenizers`) never
    builds one; a server builds them all before it reports SERVING.
    """

    def __init__(self, cards: Mapping[str, Path]) -> None:
        # (folder, class, build arguments) per key: checked now, built on first lookup.
        self._cards = {k: (path, *check_tokenizer_card(path)) for k, path in cards.items()}
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
        "meta": meta or {},
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


def read_config(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    path = directory / "config.json"
    if not directory.is_dir():
        raise FileNotFoundError(f"model folder {directory} does not exist")
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a model folder: no config.json")
    config = json.loads(path.read_text())
    if config.get("format") != FORMAT:
        raise ValueError(f"{path}: not an mmntp model config (format={config.get('format')!r})")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {config['format_version']} is newer than this mmntp"
        )
    return config


def load_model(
    directory: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> ModelBundle:
    """Load a model folder written by `save_model` (or `mmntp import-hf`)."""
    directory = Path(directory)
    config = read_config(directory)
    model_config = ModelConfig.from_dict(config["model"])
    vocab = VocabLayout.from_dict(config["vocab"])
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{directory}: no {WEIGHTS}")
    state = load_file(str(weights), device="cpu")
    model = Transformer(model_config)
    add_saved_heads(model, config.get("heads", {}), str(directory / "config.json"))
    if model_config.tie_embeddings:
        state[TIED_KEY] = state["tok_embeddings.weight"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{weights}: weights do not match the config (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]})"
        )
    model.to(device=device, dtype=dtype).eval()
    tokenizers = LazyTokenizers({k: directory / ref for k, ref in config["tokenizers"].items()})
    return ModelBundle(model, vocab, tokenizers, config.get("meta", {}), directory)
