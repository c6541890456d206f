"""Convert a Hugging Face Llama-family checkpoint folder into an mmntp model folder.

Reads `config.json` and safetensors weights (single file or sharded with an index);
pickle-based `.bin` checkpoints are refused rather than unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from mmntp.model.checkpoint import save_model
from mmntp.model.config import ModelConfig
from mmntp.model.transformer import Transformer
from mmntp.model.vocab import IdRange, VocabLayout

SUPPORTED = {"llama", "mistral", "qwen3"}

# Hugging Face parameter name (inside model.layers.N.) -> ours (inside layers.N.)
LAYER_NAMES = {
    "self_attn.q_proj": "attn.q_proj",
    "self_attn.k_proj": "attn.k_proj",
    "self_attn.v_proj": "attn.v_proj",
    "self_attn.o_proj": "attn.o_proj",
    "self_attn.q_norm": "attn.q_norm",
    "self_attn.k_norm": "attn.k_norm",
    "mlp.gate_proj": "mlp.gate_proj",
    "mlp.up_proj": "mlp.up_proj",
    "mlp.down_proj": "mlp.down_proj",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "mlp_norm",
}
TOP_NAMES = {
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "heads.token.proj.weight",
}


def hf_to_model_config(hf: dict[str, Any]) -> ModelConfig:
    """Map a Hugging Face config dict onto ModelConfig, refusing what we cannot run."""
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED:
        raise ValueError(
            f"model_type {model_type!r} is not supported; expected one of {sorted(SUPPORTED)}"
        )
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ValueError(f"rope scaling {rope_type!r} is not supported (only plain RoPE)")
    theta = hf.get("rope_theta", rope.get("rope_theta", 10000.0))
    window = hf.get("sliding_window")
    uses_window = window and hf.get("use_sliding_window", model_type == "mistral")
    if uses_window and window < hf.get("max_position_embeddings", 0):
        raise ValueError("sliding-window attention is not supported")
    if hf.get("mlp_bias"):
        raise ValueError("mlp_bias=True is not supported")
    n_heads = hf["num_attention_heads"]
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        dim=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // n_heads,
        ffn_dim=hf["intermediate_size"],
        max_seq_len=hf.get("max_position_embeddings", 2048),
        rope_theta=float(theta),
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        qk_norm=model_type == "qwen3",
        attention_bias=bool(hf.get("attention_bias", False)),
    )


def rename(hf_name: str) -> str:
    if hf_name in TOP_NAMES:
        return TOP_NAMES[hf_name]
    prefix = "model.layers."
    if hf_name.startswith(prefix):
        index, rest = hf_name[len(prefix) :].split(".", 1)
        module, _, param = rest.rpartition(".")
        if module in LAYER_NAMES:
            return f"layers.{index}.{LAYER_NAMES[module]}.{param}"
    raise ValueError(f"unexpected weight {hf_name!r} in a Llama-family checkpoint")


def read_hf_weights(src: Path) -> dict[str, torch.Tensor]:
    index = src / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (src / "model.safetensors").is_file():
        files = ["model.safetensors"]
    elif any(src.glob("*.bin")) or any(src.glob("*.pt")):
        raise ValueError(
            f"{src} holds only pickle-based weights; convert them to safetensors first"
        )
    else:
        raise FileNotFoundError(f"{src}: no model.safetensors or model.safetensors.index.json")
    state = {}
    for name in files:
        with safe_open(str(src / name), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not iterable
                if "rotary_emb.inv_freq" in key:
                    continue  # a derived buffer some exports include
                state[rename(key)] = f.get_tensor(key)
    return state


def hf_vocab(hf: dict[str, Any], vocab_size: int) -> VocabLayout:
    """An imported model's whole vocabulary is text; its BOS/EOS/PAD are aliases inside it."""
    specials = {}
    for name, key in (
        ("<bos>", "bos_token_id"),
        ("<eos>", "eos_token_id"),
        ("<pad>", "pad_token_id"),
    ):
        value = hf.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            specials[name] = int(value)
    return VocabLayout(
        specials=specials, ranges=[IdRange("text", 0, 0, vocab_size)], size=vocab_size
    )


def import_hf(src: str | Path, dst: str | Path) -> Path:
    """Convert SRC (a Hugging Face model folder) into the mmntp model folder DST."""
    src = Path(src)
    config_path = src / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{src}: no config.json (expected a Hugging Face model folder)")
    hf = json.loads(config_path.read_text())
    config = hf_to_model_config(hf)
    state = read_hf_weights(src)
    if config.tie_embeddings:
        state.pop("heads.token.proj.weight", None)
        state["heads.token.proj.weight"] = state["tok_embeddings.weight"]
    model = Transformer(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{src}: weights do not match its config (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    tokenizers = {}
    if (src / "tokenizer.json").is_file():
        from mmntp.tokenizers.text import HFTextTokenizer

        tokenizers["text"] = HFTextTokenizer.from_file(src / "tokenizer.json")
    dtype = next(iter(state.values())).dtype
    meta = {"imported_from": {"model_type": hf["model_type"], "source": src.name}}
    return save_model(dst, model, hf_vocab(hf, config.vocab_size), tokenizers, meta, dtype=dtype)
