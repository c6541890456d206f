import re

import numpy as np
import pytest

from mmntp.data.text import bundled_text_corpus, normalise_text, text_windows


@pytest.fixture(scope="module")
def corpus() -> str:
    return bundled_text_corpus()


def test_corpus_is_large_clean_english(corpus):
    assert len(corpus.encode("utf-8")) > 1_000_000
    corpus.encode("utf-8")  # valid UTF-8 (no lone surrogates)
    assert "\r" not in corpus and "\t" not in corpus
    assert not re.search(r"[ \t]\n", corpus)
    assert "\n\n\n" not in corpus
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", corpus)
    # Content from each source.
    assert "assert_stmt" in corpus  # pydoc_data topics
    assert "Nile" in corpus  # statsmodels dataset descriptions
    assert "Return" in corpus and "the" in corpus
    words = re.findall(r"[A-Za-z]+", corpus)
    assert len(words) > 150_000
    assert bundled_text_corpus() is corpus  # cached


def test_normalise_text():
    raw = "\n\r\nHello\tworld  \r\n\n\n\nnext\x00 line\x07\n  \n"
    assert normalise_text(raw) == "Hello   world\n\nnext line"
    assert normalise_text("caf\u0065\u0301") == "caf\u00e9"  # NFC


def test_text_windows_start_at_line_start(corpus):
    rng = np.random.default_rng(0)
    for _ in range(50):
        w = text_windows(corpus, rng, 200)
        assert 190 <= len(w.encode("utf-8")) <= 200
        assert w[0] != "\n"
        pos = corpus.find(w)
        assert pos >= 0
        assert pos == 0 or corpus[pos - 1] == "\n"


def test_text_windows_deterministic_and_varied(corpus):
    a = [text_windows(corpus, np.random.default_rng(i), 64) for i in range(10)]
    b = [text_windows(corpus, np.random.default_rng(i), 64) for i in range(10)]
    assert a == b
    assert len(set(a)) == 10


def test_text_windows_small_corpus_and_multibyte():
    rng = np.random.default_rng(0)
    assert text_windows("ab\ncd\n", rng, 100) == "ab\ncd\n"  # longer than the corpus
    text = "x\n\u00e9\u00e9\u00e9\n"  # é is 2 bytes
    got = {text_windows(text, np.random.default_rng(i), 4) for i in range(20)}
    assert got <= {"x\n\u00e9", "\u00e9\u00e9"}  # a cut character is dropped, not garbled
    assert "\u00e9\u00e9" in got


def test_text_windows_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="length_bytes"):
        text_windows("abc", rng, 0)
    with pytest.raises(ValueError, match="no non-empty line"):
        text_windows("\n\n", rng, 4)
