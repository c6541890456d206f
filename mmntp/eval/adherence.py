"""Prompt adherence of generated images, by plain image analysis (no learned model).

For a caption `a {color} {shape} on a {background} background` the checker finds the
background as the palette colour most border pixels are nearest to, the foreground as
the pixels clearly nearer another palette colour, its dominant colour by majority, and
its shape by its width profile (how full its bounding box is near the top and bottom).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from mmntp.data.images import COLORS, SHAPES

CAPTION = re.compile(r"^an? (?P<color>\w+) (?P<shape>\w+) on an? (?P<background>\w+) background$")
_PALETTE = np.array(list(COLORS.values()), dtype=np.float32)  # [8, 3]
_NAMES = list(COLORS)
_MIN_FOREGROUND = 12  # pixels; fewer means no shape was drawn
_TRIANGLE_SLOPE = 0.3  # bottom minus top width (of the box width): a triangle widens
_SQUARE_EDGE = 0.85  # a square is this full near its top and bottom edges


@dataclass(frozen=True)
class Verdict:
    """What the checker saw in one image, and whether it matches the caption."""

    color: str | None
    shape: str | None
    background: str
    color_ok: bool
    shape_ok: bool
    background_ok: bool


def parse_caption(caption: str) -> tuple[str, str, str]:
    """(color, shape, background) of a procedural caption; ValueError for anything else."""
    found = CAPTION.match(caption.strip())
    if not found:
        raise ValueError(
            f"not a procedural caption ('a red circle on a blue background'): {caption!r}"
        )
    color, shape, background = found["color"], found["shape"], found["background"]
    for word, allowed in ((color, COLORS), (background, COLORS), (shape, SHAPES)):
        if word not in allowed:
            raise ValueError(f"unknown word {word!r} in caption {caption!r}")
    return color, shape, background


def analyse(image: np.ndarray) -> tuple[str | None, str | None, str]:
    """(foreground colour, shape, background colour) of a uint8 image (H, W, 3)."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got {image.shape}")
    pixels = image.astype(np.float32)
    dist = np.linalg.norm(pixels[:, :, None, :] - _PALETTE, axis=-1)  # [H, W, 8]
    nearest = dist.argmin(-1)  # [H, W]
    border = np.concatenate([nearest[0], nearest[-1], nearest[:, 0], nearest[:, -1]])
    background = int(np.bincount(border, minlength=len(_NAMES)).argmax())
    # Clearly not background: nearer another colour, and far from the background's
    # (antialiased edges blend the two and would blur the shape).
    far = dist[:, :, background] > 0.35 * _spread(background)
    mask = (nearest != background) & far
    if mask.sum() < _MIN_FOREGROUND:
        return None, None, _NAMES[background]
    color = int(np.bincount(nearest[mask], minlength=len(_NAMES)).argmax())
    return _NAMES[color], _shape(mask), _NAMES[background]


def check(image: np.ndarray, caption: str) -> Verdict:
    """Compare what `analyse` sees with what the caption asks for."""
    want_color, want_shape, want_background = parse_caption(caption)
    color, shape, background = analyse(image)
    return Verdict(
        color,
        shape,
        background,
        color == want_color,
        shape == want_shape,
        background == want_background,
    )


def _spread(index: int) -> float:
    """Distance from a palette colour to its nearest other palette colour."""
    others = np.delete(_PALETTE, index, axis=0)
    return float(np.linalg.norm(others - _PALETTE[index], axis=-1).min())


def _shape(mask: np.ndarray) -> str:
    """Square, circle or triangle from the mask's width profile inside its bounding box.

    Widths near the top and bottom of the box tell them apart and survive a blurred
    edge better than the filled fraction: a square is full at both, a triangle (apex up)
    narrow at the top and wide at the bottom, a circle narrower at both than in between.
    """
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    top, height, width = rows[0], rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    widths = mask.sum(1) / width  # widths: [H], fraction of the box width per row

    def at(fraction: float) -> float:
        r = top + int(round(fraction * (height - 1)))
        return float(widths[max(r - 1, top) : r + 2].mean())

    upper, lower = at(0.15), at(0.85)
    if lower - upper > _TRIANGLE_SLOPE:
        return "triangle"
    return "square" if min(upper, lower) >= _SQUARE_EDGE else "circle"
