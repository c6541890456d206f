"""Text tokenizers: byte round trip, HF wrapper, streaming == one shot, error paths."""

from __future__ import annotations

import random

import pytest
import torch
from tokenizers import Tokenizer as RawHFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from mmntp.tokenizers import ByteTokenizer, HFTextTokenizer, load_tokenizer

TEXTS = ["", "hello", "héllo wörld", "日本語のテキスト", "emoji 🙂👍🏽 mix", "tab\tnew\nline"]


def _stream(decoder, codes: torch.Tensor, cuts: list[int]) -> list[str]:
    """Pushes `codes` split at `cuts`, then flushes; returns every piece."""
    bounds = [0, *cuts, len(codes)]
    pieces = [decoder.push(codes[a:b]) for a, b in zip(bounds, bounds[1:])]
    return [*pieces, decoder.flush()]


def _random_cuts(rng: random.Random, n: int) -> list[int]:
    return sorted(rng.sample(range(1, n), k=rng.randint(0, n - 1))) if n > 1 else []


# --- ByteTokenizer -------------------------------------------------------------------


def test_bytes_attributes() -> None:
    tok = ByteTokenizer()
    assert (tok.type_name, tok.modality, tok.kind) == ("text_bytes", "text", "discrete")
    assert tok.num_codebooks == 1 and tok.codebook_sizes == [256]
    assert tok.sample_range == (0, 256) and tok.frame_rate is None


@pytest.mark.parametrize("text", TEXTS)
def test_bytes_round_trip(text: str) -> None:
    tok = ByteTokenizer()
    enc = tok.encode(text)
    assert enc.codes.dtype == torch.long and enc.codes.shape == (len(text.encode()),)
    assert enc.codes.tolist() == list(text.encode("utf-8"))
    assert tok.decode(enc.codes) == text


def test_bytes_decode_invalid_utf8_replaces() -> None:
    raw = b"ok\xff\xc3(\xe6\x97"
    assert ByteTokenizer().decode(torch.tensor(list(raw))) == raw.decode(errors="replace")


def test_bytes_decode_accepts_list_and_empty() -> None:
    tok = ByteTokenizer()
    assert tok.decode([104, 105]) == "hi"
    assert tok.decode([]) == ""


@pytest.mark.parametrize("bad", [b"bytes", 5, None, ["a"]])
def test_bytes_encode_rejects_non_str(bad) -> None:
    with pytest.raises(ValueError, match="input must be a str"):
        ByteTokenizer().encode(bad)


@pytest.mark.parametrize(
    ("codes", "match"),
    [
        (torch.tensor([256]), r"must lie in \[0, 256\)"),
        (torch.tensor([-1]), r"must lie in \[0, 256\)"),
        (torch.tensor([1.0]), "integer tensor"),
        (torch.tensor([True]), "integer tensor"),
        (torch.zeros(2, 2, dtype=torch.long), "0-d or 1-D"),
    ],
)
def test_bytes_decode_rejects_bad_codes(codes: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ByteTokenizer().decode(codes)


@pytest.mark.parametrize("text", TEXTS)
def test_bytes_stream_splits_every_position(text: str) -> None:
    tok = ByteTokenizer()
    codes = tok.encode(text).codes
    for cut in range(len(codes) + 1):
        pieces = _stream(tok.stream_decoder(), codes, [cut] if 0 < cut < len(codes) else [])
        assert "".join(pieces) == text
        # A multi-byte character is never emitted as replacement halves.
        assert all("\ufffd" not in p for p in pieces)


def test_bytes_stream_random_bytes_equals_one_shot() -> None:
    rng = random.Random(0)
    tok = ByteTokenizer()
    for _ in range(50):
        raw = bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
        codes = torch.tensor(list(raw))
        pieces = _stream(tok.stream_decoder(), codes, _random_cuts(rng, len(raw)))
        assert "".join(pieces) == tok.decode(codes) == raw.decode(errors="replace")


def test_bytes_stream_one_code_at_a_time_and_0d() -> None:
    decoder = ByteTokenizer().stream_decoder()
    out = [decoder.push(torch.tensor(b)) for b in "é!".encode()]  # 0-d pushes
    assert out == ["", "é", "!"]
    assert decoder.flush() == ""


def test_bytes_stream_flush_replaces_truncated_character() -> None:
    decoder = ByteTokenizer().stream_decoder()
    assert decoder.push(torch.tensor([0x61, 0xE6, 0x97])) == "a"
    assert decoder.flush() == "\ufffd"


def test_bytes_from_config_rejects_keys() -> None:
    with pytest.raises(ValueError, match="takes no config"):
        ByteTokenizer.from_config({"vocab": 3}, {})


# --- HFTextTokenizer -----------------------------------------------------------------


@pytest.fixture(scope="module")
def bpe() -> RawHFTokenizer:
    """A tiny byte-level BPE trained in the test: multi-byte characters span tokens."""
    tok = RawHFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["hello world", "the cat sat on the mat", "hello there"], trainer)
    return tok


def _word_level(words: list[str]) -> RawHFTokenizer:
    vocab = {w: i for i, w in enumerate(["[UNK]", *words])}
    tok = RawHFTokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


def test_hf_attributes(bpe: RawHFTokenizer) -> None:
    tok = HFTextTokenizer(bpe)
    size = bpe.get_vocab_size(with_added_tokens=True)
    assert (tok.type_name, tok.modality, tok.kind) == ("text_hf", "text", "discrete")
    assert tok.codebook_sizes == [size] and tok.sample_range == (0, size)
    assert tok.num_codebooks == 1 and tok.frame_rate is None


@pytest.mark.parametrize("text", TEXTS)
def test_hf_round_trip(bpe: RawHFTokenizer, text: str) -> None:
    tok = HFTextTokenizer(bpe)
    enc = tok.encode(text)
    assert enc.codes.dtype == torch.long and enc.codes.dim() == 1
    assert enc.codes.tolist() == bpe.encode(text, add_special_tokens=False).ids
    assert tok.decode(enc.codes) == text


def test_hf_decode_skips_special_tokens(bpe: RawHFTokenizer) -> None:
    tok = HFTextTokenizer(bpe)
    eos = bpe.token_to_id("<eos>")
    codes = torch.cat([tok.encode("hello").codes, torch.tensor([eos])])
    assert tok.decode(codes) == "hello"


def test_hf_errors(bpe: RawHFTokenizer) -> None:
    tok = HFTextTokenizer(bpe)
    with pytest.raises(ValueError, match="input must be a str"):
        tok.encode(["hello"])
    with pytest.raises(ValueError, match=r"must lie in \[0, "):
        tok.decode(torch.tensor([tok.codebook_sizes[0]]))
    with pytest.raises(ValueError, match="needs the card folder"):
        HFTextTokenizer.from_config({"tokenizer_file": "tokenizer.json"}, {})
    with pytest.raises(ValueError, match="tokenizer_file"):
        HFTextTokenizer.from_config({}, {})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        HFTextTokenizer.from_file("/nonexistent/tokenizer.json")


@pytest.mark.parametrize("text", TEXTS)
def test_hf_stream_equals_one_shot(bpe: RawHFTokenizer, text: str) -> None:
    tok = HFTextTokenizer(bpe)
    codes = tok.encode(text).codes
    rng = random.Random(len(text))
    for cuts in [list(range(1, len(codes))), _random_cuts(rng, len(codes)), []]:
        pieces = _stream(tok.stream_decoder(), codes, cuts)
        assert "".join(pieces) == tok.decode(codes) == text
        assert all("\ufffd" not in p for p in pieces)


def test_hf_stream_holds_back_split_character(bpe: RawHFTokenizer) -> None:
    tok = HFTextTokenizer(bpe)
    codes = tok.encode("hé").codes  # byte-level BPE: "é" is two tokens here
    assert len(codes) == 3
    decoder = tok.stream_decoder()
    assert [decoder.push(c) for c in codes] == ["h", "", "é"]
    assert decoder.flush() == ""


def test_hf_stream_rewrite_resumes_from_divergence() -> None:
    class Rewrite:
        """A decoder that rewrites emitted text: "c" after "ab" turns that "ab" into "AB"."""

        def decode_chain(self, tokens: list[str]) -> list[str]:
            out = list(tokens)
            for i in range(1, len(out)):
                if out[i] == "c" and out[i - 1] == "ab":
                    out[i - 1] = "AB"
            return out

    raw = _word_level(["ab", "c", "d"])
    raw.decoder = decoders.Decoder.custom(Rewrite())
    tok = HFTextTokenizer(raw)
    codes = tok.encode("ab ab c d").codes
    decoder = tok.stream_decoder()
    assert [decoder.push(c) for c in codes] == ["ab", "ab", "ABc", "d"]
    assert decoder.flush() == ""


def test_hf_word_level_stream() -> None:
    tok = HFTextTokenizer(_word_level(["the", "cat", "sat"]))
    codes = tok.encode("the cat sat dog").codes
    assert codes.tolist() == [1, 2, 3, 0]
    pieces = _stream(tok.stream_decoder(), codes, [1, 2, 3])
    assert "".join(pieces) == tok.decode(codes) == "the cat sat [UNK]"


def test_hf_save_load_round_trip(bpe: RawHFTokenizer, tmp_path) -> None:
    tok = HFTextTokenizer(bpe)
    tok.save(tmp_path / "card", card="# tiny bpe\n")
    assert (tmp_path / "card" / "tokenizer.json").is_file()
    assert (tmp_path / "card" / "CARD.md").read_text() == "# tiny bpe\n"
    loaded = load_tokenizer(tmp_path / "card")
    assert isinstance(loaded, HFTextTokenizer)
    assert loaded.config() == tok.config() and loaded.codebook_sizes == tok.codebook_sizes
    for text in TEXTS:
        assert torch.equal(loaded.encode(text).codes, tok.encode(text).codes)
    # from_file on the copied JSON gives the same tokenizer too.
    again = HFTextTokenizer.from_file(tmp_path / "card" / "tokenizer.json")
    assert again.encode("hello there").codes.tolist() == tok.encode("hello there").codes.tolist()


def test_hf_load_without_tokenizer_json(bpe: RawHFTokenizer, tmp_path) -> None:
    HFTextTokenizer(bpe).save(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
