"""Images for the image tokenizers: procedural shapes, scikit-learn digits, bundled photos.

Three sources, all offline and deterministic from a seed:

* procedural shapes: "a {color} {shape} on a {background} background" with random size
  and position (`shape_examples`; the captions serve text-to-image later);
* scikit-learn's 8x8 `load_digits`, upscaled to RGB, captioned "the digit 7"
  (`digit_examples`; the last 297 digits are held out);
* random crops of the photos bundled with scikit-learn and scikit-image
  (`photo_crops`). One photo, scikit-image's `chelsea`, is held out and never trained on;
  `heldout_photo_crops` gives fixed crops of it for evaluation.

Images are uint8 arrays (H, W, 3); `ImageMixture.batch(step)` mixes the three into float
tensors [B, 3, S, S] in [0, 1] for training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 70, 220),
    "yellow": (245, 215, 40),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "orange": (245, 140, 20),
    "purple": (140, 50, 180),
}
SHAPES = ("circle", "square", "triangle")
# skimage.data images that ship inside the wheel (others are fetched, failing offline).
# `cat` is the same photo as `chelsea`, so it is left out with it.
TRAIN_PHOTOS_SKIMAGE = (
    "astronaut",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "colorwheel",
    "camera",
    "coins",
    "moon",
    "brick",
    "grass",
    "gravel",
    "page",
    "text",
)
TRAIN_PHOTOS_SKLEARN = ("china.jpg", "flower.jpg")
HELDOUT_PHOTO = "chelsea"
DIGITS_HELDOUT_FROM = 1500  # digits [1500, 1797) are held out
_SUPERSAMPLE = 4


def _render_shape(
    shape: str, color: str, background: str, size: int, rng: np.random.Generator
) -> np.ndarray:
    """One antialiased shape (drawn at 4x, then downsampled) as uint8 (size, size, 3)."""
    big = size * _SUPERSAMPLE
    image = Image.new("RGB", (big, big), COLORS[background])
    draw = ImageDraw.Draw(image)
    extent = rng.uniform(0.3, 0.8) * big  # the shape's bounding-box side
    x0 = rng.uniform(0, big - extent)
    y0 = rng.uniform(0, big - extent)
    box = (x0, y0, x0 + extent, y0 + extent)
    if shape == "circle":
        draw.ellipse(box, fill=COLORS[color])
    elif shape == "square":
        draw.rectangle(box, fill=COLORS[color])
    else:
        draw.polygon([(x0 + extent / 2, y0), (x0, y0 + extent), box[2:]], fill=COLORS[color])
    return np.asarray(image.resize((size, size), Image.Resampling.BOX))


def shape_examples(n: int, seed: int, size: int = 32) -> list[tuple[np.ndarray, str]]:
    """`n` (image uint8 (size, size, 3), caption) pairs; the same seed gives the same pairs.

    Caption: "a red circle on a blue background" (always "a", as in "a orange square"); the
    shape's color is never the background's.
    """
    rng = np.random.default_rng(seed)
    names = list(COLORS)
    out = []
    for _ in range(n):
        shape = SHAPES[rng.integers(len(SHAPES))]
        color = names[rng.integers(len(names))]
        background = names[(names.index(color) + 1 + rng.integers(len(names) - 1)) % len(names)]
        image = _render_shape(shape, color, background, size, rng)
        # The exact form: "a" before every colour, "orange" included.
        caption = f"a {color} {shape} on a {background} background"
        out.append((image, caption))
    return out


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target  # images: (1797, 8, 8) in 0..16


def digit_examples(split: str = "train", size: int = 32) -> list[tuple[np.ndarray, str]]:
    """scikit-learn digits as (uint8 (size, size, 3), "the digit 7"); split train | heldout."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    return list(_digit_examples(split, size))


@lru_cache(maxsize=4)
def _digit_examples(split: str, size: int) -> tuple[tuple[np.ndarray, str], ...]:
    images, targets = _digits()
    part = slice(0, DIGITS_HELDOUT_FROM) if split == "train" else slice(DIGITS_HELDOUT_FROM, None)
    out = []
    for digit, target in zip(images[part], targets[part]):
        gray = Image.fromarray((digit * (255 / 16)).round().astype(np.uint8))
        big = np.asarray(gray.resize((size, size), Image.Resampling.BILINEAR))
        rgb = np.repeat(big[:, :, None], 3, axis=2)
        rgb.flags.writeable = False  # shared by every caller through the cache
        out.append((rgb, f"the digit {int(target)}"))
    return tuple(out)


def _as_rgb(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8:  # e.g. float images in [0, 1]
        array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


@lru_cache(maxsize=1)
def training_photos() -> tuple[np.ndarray, ...]:
    """The bundled photos trained on, uint8 (H, W, 3) each (never the held-out one)."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = [_as_rgb(getattr(data, name)()) for name in TRAIN_PHOTOS_SKIMAGE]
    bunch = load_sample_images()
    for image, filename in zip(bunch.images, bunch.filenames):
        if filename.rsplit("/", 1)[-1] in TRAIN_PHOTOS_SKLEARN:
            photos.append(_as_rgb(image))
    return tuple(photos)


@lru_cache(maxsize=1)
def heldout_photo() -> np.ndarray:
    """scikit-image's `chelsea` (300 x 451), the photo kept out of training."""
    from skimage import data

    return _as_rgb(getattr(data, HELDOUT_PHOTO)())


def random_crop(photo: np.ndarray, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A random square crop (side log-uniform in [size, short side]) resized to `size`."""
    h, w, _ = photo.shape
    short = min(h, w)
    side = int(round(math.exp(rng.uniform(math.log(size), math.log(short)))))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(photo[top : top + side, left : left + side])
    if side != size:
        crop = crop.resize((size, size), Image.Resampling.BOX)
    array = np.asarray(crop)
    return array[:, ::-1] if rng.random() < 0.5 else array


def photo_crops(n: int, seed: int, size: int = 32) -> list[np.ndarray]:
    """`n` random crops of the training photos, uint8 (size, size, 3), deterministic."""
    rng = np.random.default_rng(seed)
    photos = training_photos()
    return [random_crop(photos[rng.integers(len(photos))], rng, size) for _ in range(n)]


def heldout_photo_crops(n: int = 256, size: int = 32, seed: int = 2024) -> list[np.ndarray]:
    """Fixed crops of the held-out photo for evaluation (same scales as training)."""
    rng = np.random.default_rng(seed)
    photo = heldout_photo()
    return [np.ascontiguousarray(random_crop(photo, rng, size)) for _ in range(n)]


def to_batch(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 (H, W, 3) arrays -> float tensor [B, 3, H, W] in [0, 1]."""
    stacked = torch.from_numpy(np.stack([np.ascontiguousarray(i) for i in images]))
    return stacked.permute(0, 3, 1, 2).float() / 255.0  # [B, 3, H, W]


@dataclass
class ImageMixture:
    """Training batches mixing photo crops, shapes and digits; batch(step) is deterministic."""

    seed: int = 0
    size: int = 32
    photos: float = 0.6
    shapes: float = 0.25
    digits: float = 0.15

    def __post_init__(self) -> None:
        weights = (self.photos, self.shapes, self.digits)
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"mixture weights must be >= 0 with a positive sum, got {weights}")

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        """Batch number `step`: float [batch_size, 3, size, size] in [0, 1]."""
        rng = np.random.default_rng([self.seed, step])
        weights = np.array([self.photos, self.shapes, self.digits], dtype=np.float64)
        counts = rng.multinomial(batch_size, weights / weights.sum())
        seeds = rng.integers(0, 2**32, size=2)
        images = photo_crops(int(counts[0]), int(seeds[0]), self.size)
        images += [img for img, _ in shape_examples(int(counts[1]), int(seeds[1]), self.size)]
        digits = digit_examples("train", self.size)
        images += [digits[i][0] for i in rng.integers(0, len(digits), size=int(counts[2]))]
        return to_batch(images)[torch.from_numpy(rng.permutation(batch_size))]
