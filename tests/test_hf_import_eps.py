"""hf_import reads the norm epsilon (and RoPE theta) from the config's own keys: the values
used here differ from every fallback, so a wrong key shows. The first test needs no
transformers; the second compares logits with transformers when the dev extra is there."""

import json

import pytest
import torch

from mmntp.model.hf_import import hf_to_model_config, import_hf

BASE = dict(
    model_type="llama",
    vocab_size=101,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)


def test_config_values_come_from_their_keys():
    cfg = hf_to_model_config({**BASE, "rms_norm_eps": 3e-3, "rope_theta": 1234.0})
    assert cfg.norm_eps == 3e-3  # the fallback is 1e-6
    assert cfg.rope_theta == 1234.0  # the fallback is 10000
    assert cfg.n_kv_heads == 2 and cfg.head_dim == 8 and cfg.ffn_dim == 64
    # and the fallbacks when the keys are absent
    plain = hf_to_model_config(BASE)
    assert plain.norm_eps == 1e-6 and plain.rope_theta == 10000.0


def test_imported_model_uses_the_config_eps(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=101,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=5e-2,  # large: the hidden states' mean square is ~1e-3 at this init
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(config).eval()
    src, dst = tmp_path / "hf", tmp_path / "ours"
    hf.save_pretrained(src, safe_serialization=True)
    import_hf(src, dst)
    assert json.loads((dst / "config.json").read_text())["model"]["norm_eps"] == 5e-2

    from mmntp.model.checkpoint import load_model

    model = load_model(dst).model
    ids = torch.randint(0, 101, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-4, rtol=0)
