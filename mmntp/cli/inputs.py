"""What `generate` reads and checks before it runs: the forecast's history (and the future
timestamps that continue it) and whether a prompt is one the bundled model was taught."""

from __future__ import annotations

import re
import sys
import warnings

import numpy as np

_STAMP_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d", "%Y-%m")


def future_timestamps(stamps: list[str] | None, horizon: int) -> list[str] | None:
    """`horizon` timestamps after `stamps`, at their inferred frequency, written in their
    style; None when there are none or they do not parse (integers step by their gap)."""
    if not stamps or len(stamps) < 2:
        return None
    if all(re.fullmatch(r"-?\d+", s.strip()) for s in stamps):
        ints = np.array([int(s) for s in stamps])
        steps = np.unique(np.diff(ints))
        if steps.size != 1 or steps[0] == 0:
            return None
        return [str(int(ints[-1] + steps[0] * k)) for k in range(1, horizon + 1)]
    try:
        import pandas as pd

        with warnings.catch_warnings():  # dateutil's fallback and pandas' notices are fine
            warnings.simplefilter("ignore")
            times = pd.DatetimeIndex(pd.to_datetime(stamps))
            freq = pd.infer_freq(times) if len(times) >= 3 else None
        if freq is None:
            gaps = np.unique(np.diff(times.asi8))
            if gaps.size != 1:
                return None
            freq = pd.Timedelta(int(gaps[0]), unit="ns")
        future = pd.date_range(times[-1], periods=horizon + 1, freq=freq)[1:]
    except (ImportError, ValueError, TypeError):
        return None
    for fmt in _STAMP_FORMATS:
        if list(times.strftime(fmt)) == [s.strip() for s in stamps]:
            return list(future.strftime(fmt))
    return [t.isoformat() for t in future]


def read_context(path: str, column=None, timestamp_column=None):
    """(values shaped (length,), the input's timestamps or None)."""
    from mmntp.api.series_io import read_series

    return read_series(path, column, timestamp_column)


# -- what the bundled model knows (services/default/CARD.md) -----------------------------

BUNDLED_IMAGES = "8 colours x 3 shapes ('a red circle on a blue background') or 'the digit 7'"
BUNDLED_AUDIO = "'a sine|square|sawtooth tone at 110..880 Hz' or 'say: some words'"


def _image_known(prompt: str) -> bool:
    from mmntp.data.images import COLORS, SHAPES

    colors, shapes = "|".join(COLORS), "|".join(SHAPES)
    scene = rf"an? ({colors}) ({shapes})( on an? ({colors}) background)?"
    return bool(re.fullmatch(rf"{scene}|the digit \d", prompt.strip().lower()))


def _audio_known(prompt: str) -> bool:
    text = prompt.strip().lower()
    return text.startswith("say:") or bool(
        re.fullmatch(r"an? (sine|square|sawtooth) tone at \d+(\.\d+)? hz", text)
    )


def warn_if_unknown_prompt(modality: str, prompt: str | None) -> bool:
    """On stderr (not an error): a prompt outside the bundled model's training captions."""
    if prompt is None:
        return False
    if modality == "image" and not _image_known(prompt):
        known = BUNDLED_IMAGES
    elif modality == "audio" and not _audio_known(prompt):
        known = BUNDLED_AUDIO
    else:
        return False
    print(
        f"mmntp generate: warning: the bundled model only knows {known}; "
        f"{prompt!r} will likely give noise",
        file=sys.stderr,
    )
    return True
