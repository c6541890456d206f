"""English text for training, gathered offline from what ships with Python and statsmodels.

Sources, in order: the Python language reference topics (``pydoc_data.topics``), the
descriptions of the statsmodels datasets, and the docstrings of the top-level standard
library modules (parsed from source with ``ast``, nothing imported). About 1.5 MB.
"""

from __future__ import annotations

import ast
import functools
import importlib
import re
import sysconfig
import unicodedata
from pathlib import Path

import numpy as np

__all__ = ["bundled_text_corpus", "normalise_text", "text_windows"]

_STATSMODELS_DATASETS = (
    "anes96", "cancer", "ccard", "china_smoking", "co2", "committee", "copper", "cpunish",
    "danish_data", "elec_equip", "elnino", "engel", "fair", "fertility", "grunfeld", "heart",
    "interest_inflation", "longley", "macrodata", "modechoice", "nile", "randhie",
    "scotland", "spector", "stackloss", "star98", "statecrime", "strikes", "sunspots",
)  # fmt: skip
_DATASET_FIELDS = ("TITLE", "DESCRSHORT", "DESCRLONG", "NOTE", "SOURCE")

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_BLANK_RUNS = re.compile(r"\n{3,}")


def normalise_text(text: str) -> str:
    """Text with NFC unicode, ``\\n`` line ends, tabs expanded, no control characters,
    no trailing spaces and at most one blank line in a row."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").expandtabs(4)
    text = _CONTROL.sub("", text)
    text = _TRAILING_SPACE.sub("\n", text)
    return _BLANK_RUNS.sub("\n\n", text).rstrip().lstrip("\n")


def _pydoc_topics() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


def _statsmodels_descriptions() -> list[str]:
    docs = []
    for name in _STATSMODELS_DATASETS:
        try:
            module = importlib.import_module(f"statsmodels.datasets.{name}")
        except ImportError:  # a dataset dropped by some statsmodels release
            continue
        parts = [str(getattr(module, f, "")) for f in _DATASET_FIELDS]
        docs.append("\n\n".join(p.strip() for p in parts if p.strip()))
    return docs


def _stdlib_docstrings() -> list[str]:
    docs = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                # One-liners are mostly "Return x." noise; keep the explanatory ones.
                if doc and "\n" in doc:
                    docs.append(doc)
    return docs


@functools.lru_cache(maxsize=1)
def bundled_text_corpus() -> str:
    """Real English text (UTF-8-clean, normalised whitespace) as one string; cached.

    Documents are separated by a blank line; every document starts on a new line.
    """
    documents = _pydoc_topics() + _statsmodels_descriptions() + _stdlib_docstrings()
    cleaned = (normalise_text(d) for d in documents)
    return "\n\n".join(d for d in cleaned if d) + "\n"


@functools.lru_cache(maxsize=4)
def _encoded_with_line_starts(corpus: str) -> tuple[bytes, np.ndarray]:
    data = corpus.encode("utf-8")
    buf = np.frombuffer(data, dtype=np.uint8)
    newline = np.flatnonzero(buf == ord("\n"))
    starts = np.concatenate(([0], newline + 1))
    # Begin only on non-empty lines, so a window never opens with a blank line.
    starts = starts[starts < len(data)]
    starts = starts[buf[starts] != ord("\n")]
    return data, starts


def text_windows(corpus: str, rng: np.random.Generator, length_bytes: int) -> str:
    """A random window of at most ``length_bytes`` UTF-8 bytes starting at a line start.

    Starts are drawn uniformly from the non-empty lines whose window fits in the corpus
    (from the first line when none does). A multi-byte character cut at the window's
    end is dropped, so the result may be a few bytes short.
    """
    if length_bytes < 1:
        raise ValueError(f"length_bytes must be >= 1, got {length_bytes}")
    data, starts = _encoded_with_line_starts(corpus)
    if starts.size == 0:
        raise ValueError("corpus has no non-empty line")
    fitting = starts[starts <= len(data) - length_bytes]
    start = int(fitting[rng.integers(fitting.size)]) if fitting.size else int(starts[0])
    return data[start : start + length_bytes].decode("utf-8", errors="ignore")
