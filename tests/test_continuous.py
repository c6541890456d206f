"""A fake continuous tokenizer (fixed random projection of audio frames) feeding the trunk.

Shows the whole continuous path that images and audio use later: tokenizer -> latents
(T, D) -> per-modality input projection at marked positions of one mixed sequence, with
cached decoding equal to the full forward.
"""

from pathlib import Path
from typing import Any

import torch

from mmntp.model.config import preset
from mmntp.model.transformer import ContinuousInput, Transformer
from mmntp.model.vocab import VocabLayout
from mmntp.tokenizers import ContinuousTokenizer, Encoded, StreamDecoder, load_tokenizer
from mmntp.tokenizers.base import register_tokenizer


@register_tokenizer
class FakeFrameTokenizer(ContinuousTokenizer):
    """Frames of `hop` samples -> latents through a fixed orthogonal matrix (exact inverse)."""

    type_name = "test_fake_frames"
    modality = "audio"

    def __init__(self, hop: int = 8, seed: int = 0, basis: torch.Tensor | None = None):
        self.hop, self.seed, self.latent_dim = hop, seed, hop
        g = torch.Generator().manual_seed(seed)
        self.basis = (
            basis if basis is not None else torch.linalg.qr(torch.randn(hop, hop, generator=g))[0]
        )
        self.frame_rate = 16000 / hop

    def encode(self, x: Any, state=None) -> Encoded:
        frames = torch.as_tensor(x, dtype=torch.float32).reshape(-1, self.hop)
        return Encoded(frames @ self.basis, {})

    def decode(self, codes: torch.Tensor, state=None) -> torch.Tensor:
        return (codes @ self.basis.T).reshape(-1)

    def stream_decoder(self, state=None) -> StreamDecoder:
        tok = self

        class _Stream(StreamDecoder):
            def push(self, codes):
                return tok.decode(codes)

            def flush(self):
                return torch.empty(0)

        return _Stream()

    def config(self):
        return {"hop": self.hop, "seed": self.seed}

    def tensors(self):
        return {"basis": self.basis}

    @classmethod
    def from_config(cls, config, tensors, directory: Path | None = None):
        return cls(basis=tensors["basis"], **config)


def test_fake_continuous_tokenizer_round_trip_and_card(tmp_path):
    tok = FakeFrameTokenizer()
    signal = torch.randn(64)
    enc = tok.encode(signal)
    assert enc.codes.shape == (8, tok.latent_dim)
    torch.testing.assert_close(tok.decode(enc.codes), signal, atol=1e-5, rtol=0)
    tok.save(tmp_path / "card")
    again = load_tokenizer(tmp_path / "card")
    assert isinstance(again, FakeFrameTokenizer) and again.kind == "continuous"
    torch.testing.assert_close(again.encode(signal).codes, enc.codes)


def test_mixed_sequence_from_a_continuous_tokenizer():
    """<bos> <begin_audio> [latent frames] <end_audio> text...: cached == full forward."""
    tok = FakeFrameTokenizer()
    vocab = VocabLayout.build(text_size=256)
    torch.manual_seed(0)
    model = Transformer(
        preset("test", vocab.size, continuous_inputs={"audio": tok.latent_dim})
    ).eval()
    latents = tok.encode(torch.randn(40)).codes  # 5 frames
    text = [vocab.to_global("text", 0, b) for b in b"hi there"]
    ids = [vocab.special("<bos>"), vocab.special("<begin_audio>")]
    ids += [vocab.special("<pad>")] * len(latents) + [vocab.special("<end_audio>")] + text
    ids_t = torch.tensor([ids])
    mask = torch.zeros_like(ids_t, dtype=torch.bool)
    mask[0, 2 : 2 + len(latents)] = True
    with torch.no_grad():
        full = model(ids_t, continuous=[ContinuousInput("audio", mask, latents)])
        cache = model.new_cache(1, max_len=len(ids))
        steps = []
        for t in range(len(ids)):
            m = mask[:, t : t + 1]
            cont = [ContinuousInput("audio", m, latents[t - 2 : t - 1])] if m.any() else None
            steps.append(
                model(
                    ids_t[:, t : t + 1], positions=torch.tensor([[t]]), cache=cache, continuous=cont
                )
            )
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    # the latents matter: different audio, different text logits after it
    with torch.no_grad():
        other = model(ids_t, continuous=[ContinuousInput("audio", mask, latents.flip(0))])
    assert not torch.allclose(other[0, -1], full[0, -1])


def test_continuous_inputs_under_bf16_autocast_train_and_match_fp32():
    """Under autocast the input projection's output is bf16 while the token embedding stays
    fp32: the two still merge (this broke every autocast run with images or audio latents),
    gradients reach the projection, and the logits stay near the fp32 ones."""
    vocab = VocabLayout.build(text_size=256)
    torch.manual_seed(0)
    model = Transformer(preset("test", vocab.size, continuous_inputs={"audio": 8}))
    ids = torch.randint(0, 256, (2, 12))
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, 3:7] = True
    cont = [ContinuousInput("audio", mask, torch.randn(8, 8))]
    with torch.no_grad():
        fp32 = model(ids, continuous=cont)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(ids, continuous=cont)
    logits.float().sum().backward()
    assert model.input_proj["audio"].weight.grad is not None
    torch.testing.assert_close(logits.float(), fp32, atol=0.05, rtol=0.05)
