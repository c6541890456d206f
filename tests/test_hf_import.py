"""Our transformer equals Hugging Face's LlamaForCausalLM on the same weights."""

import json
import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

from mmntp.model.checkpoint import load_model  # noqa: E402
from mmntp.model.hf_import import import_hf  # noqa: E402
from mmntp.model.reference import generate_reference  # noqa: E402
from mmntp.model.sampling import SamplingParams  # noqa: E402


def _tiny_llama(tmp_path, **overrides):
    settings = dict(
        vocab_size=211,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=3,
        num_attention_heads=8,
        num_key_value_heads=2,  # grouped-query attention
        max_position_embeddings=256,
        rope_theta=5000.0,  # not the default 10000
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
        bos_token_id=1,
        eos_token_id=2,
    )
    config = transformers.LlamaConfig(**{**settings, **overrides})
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # non-trivial norm weights so a wrong mapping shows
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    src = tmp_path / "hf"
    hf.save_pretrained(src, safe_serialization=True)
    return hf, src


@pytest.mark.parametrize("tied", [True, False])
def test_imported_logits_and_greedy_match_transformers(tmp_path, tied):
    hf, src = _tiny_llama(tmp_path, tie_word_embeddings=tied)
    dst = tmp_path / "mmntp"
    import_hf(src, dst)
    bundle = load_model(dst)
    model = bundle.model
    cfg = json.loads((dst / "config.json").read_text())["model"]
    assert cfg["rope_theta"] == 5000.0 and cfg["n_kv_heads"] == 2
    assert cfg["tie_embeddings"] is tied
    assert bundle.vocab.special("<eos>") == 2

    ids = torch.randint(3, 211, (2, 37))
    with torch.no_grad():
        ours = model(ids)
        theirs = hf(ids).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)

    prompt = ids[0, :9]
    with torch.no_grad():
        expected = hf.generate(
            prompt[None],
            max_new_tokens=20,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )[0, 9:].tolist()
    got = generate_reference(model, prompt, 20, SamplingParams(temperature=0)).token_ids[0]
    assert got == expected


def test_cli_import_hf_and_generate_logprobs(tmp_path):
    hf, src = _tiny_llama(tmp_path)
    dst = tmp_path / "converted"
    run = [sys.executable, "-m", "mmntp.cli"]
    subprocess.run([*run, "import-hf", str(src), str(dst)], check=True, capture_output=True)
    out = subprocess.run(
        [
            *run,
            "generate",
            "--model",
            str(dst),
            "--prompt-ids",
            "5,17,42",
            "--max-tokens",
            "6",
            "--temperature",
            "0",
            "--logprobs",
            "--json",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout)
    prompt = torch.tensor([[5, 17, 42]])
    with torch.no_grad():
        seq = hf.generate(
            prompt, max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0
        )
        logits = hf(seq).logits[0, 2:-1].log_softmax(-1)
    new = seq[0, 3:]
    assert result["token_ids"] == new.tolist()
    expected_lp = logits.gather(-1, new[:, None]).squeeze(-1).tolist()
    assert result["logprobs"] == pytest.approx(expected_lp, abs=1e-4)


def test_import_refuses_unsupported_and_pickles(tmp_path):
    _, src = _tiny_llama(tmp_path)
    config = json.loads((src / "config.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(ValueError, match="model_type 'gpt2' is not supported"):
        import_hf(bad, tmp_path / "out1")
    (bad / "config.json").write_text(json.dumps(config))
    (bad / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(ValueError, match="pickle-based"):
        import_hf(bad, tmp_path / "out2")
    scaled = {**config, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}
    scaled.pop("rope_parameters", None)
    (bad / "config.json").write_text(json.dumps(scaled))
    with pytest.raises(ValueError, match="rope scaling 'yarn' is not supported"):
        import_hf(bad, tmp_path / "out3")
