"""The text-to-audio training source: captioned tone documents, whole or cut to a prefix."""

import numpy as np
import pytest
import torch

from mmntp.model.vocab import VocabLayout
from mmntp.tokenizers import ByteTokenizer
from mmntp.tokenizers.base import Encoded
from mmntp.train.data import AudioSource

FRAMES_PER_SECOND = 50


class _Frames:
    """A stand-in audio tokenizer: frame i of any clip is code i % 16 (50 frames a second)."""

    def encode(self, clip):
        frames = len(clip) * FRAMES_PER_SECOND // 16_000
        return Encoded(torch.arange(frames) % 16)


def _source(**kw) -> tuple[VocabLayout, AudioSource]:
    vocab = VocabLayout.build(text_size=256, codebooks={"audio": [16]})
    text = ByteTokenizer()
    return vocab, AudioSource(vocab, _Frames(), pool_size=8, text_tokenizer=text, **kw)


def _clip_lengths(vocab: VocabLayout, source: AudioSource, docs: int = 60) -> list[int]:
    """Audio frames of each document drawn (several are packed into a row)."""
    rng, lengths = np.random.default_rng(0), []
    begin, end = vocab.special("<begin_audio>"), vocab.special("<end_audio>")
    audio = vocab.range("audio")
    while len(lengths) < docs:
        ids = source.document(rng, 512)
        starts = [i for i, t in enumerate(ids) if t == begin]
        for s in starts:
            if end not in ids[s:]:
                continue  # the row's last document was cut by the row's end
            stop = ids.index(end, s)
            codes = [t - audio.start for t in ids[s + 1 : stop]]
            assert codes == [i % 16 for i in range(len(codes))]  # a prefix of the clip
            lengths.append(len(codes))
    return lengths


def test_whole_clips_by_default():
    vocab, source = _source(seconds=1.0)
    assert set(_clip_lengths(vocab, source)) == {FRAMES_PER_SECOND}


def test_min_seconds_cuts_tone_documents_to_log_uniform_prefixes():
    vocab, source = _source(seconds=1.0, min_seconds=0.1)
    lengths = np.array(_clip_lengths(vocab, source, docs=400))
    assert lengths.min() >= 5 and lengths.max() <= FRAMES_PER_SECOND
    # log-uniform over [0.1, 1] s: the median is near sqrt(0.1) s = 0.32 s (16 frames)
    assert 12 <= np.median(lengths) <= 20
    assert (lengths < 10).mean() > 0.2 and (lengths > 30).mean() > 0.15


def test_min_seconds_out_of_range_names_the_field():
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="min_seconds must be in"):
            _source(seconds=1.0, min_seconds=bad)
