"""Shared fixtures: a tiny random model folder with the real tokenizers."""

import pytest
import torch

from mmntp.model.checkpoint import save_model
from mmntp.model.config import preset
from mmntp.model.transformer import Transformer
from mmntp.train.data import build_tokenizers, build_vocab


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A model folder: random `test`-preset weights, bytes text + Chronos series tokenizers."""
    tokenizers = build_tokenizers()
    vocab = build_vocab(tokenizers)
    torch.manual_seed(0)
    model = Transformer(preset("test", vocab.size))
    path = tmp_path_factory.mktemp("models") / "tiny"
    limits = {"timeseries_max_horizon": 32, "timeseries_context_length": 128}
    save_model(path, model, vocab, tokenizers, meta={"limits": limits})
    return path
