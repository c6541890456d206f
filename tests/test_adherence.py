"""The deterministic prompt-adherence checker, validated on the procedural renderer itself."""

import numpy as np
import pytest

from mmntp.data.images import COLORS, shape_examples
from mmntp.eval.adherence import analyse, check, parse_caption


def test_checker_reads_the_procedural_images_it_will_judge():
    examples = shape_examples(300, seed=7)
    verdicts = [check(image, caption) for image, caption in examples]
    assert sum(v.color_ok for v in verdicts) == 300
    assert sum(v.background_ok for v in verdicts) == 300
    assert sum(v.shape_ok for v in verdicts) >= 297  # tiny antialiased shapes may blur


def test_a_plain_image_has_no_shape():
    blank = np.full((32, 32, 3), COLORS["blue"], dtype=np.uint8)
    assert analyse(blank) == (None, None, "blue")
    verdict = check(blank, "a red square on a blue background")
    assert verdict.background_ok and not verdict.color_ok and not verdict.shape_ok


def test_wrong_colour_and_shape_are_caught():
    image, caption = shape_examples(1, seed=3)[0]
    color, shape, background = parse_caption(caption)
    other_color = next(c for c in COLORS if c not in (color, background))
    other_shape = "square" if shape != "square" else "circle"
    wrong = f"a {other_color} {other_shape} on a {background} background"
    verdict = check(image, wrong)
    assert not verdict.color_ok and not verdict.shape_ok and verdict.background_ok


@pytest.mark.parametrize(
    ("caption", "message"),
    [
        ("the digit 7", "not a procedural caption"),
        ("a pink circle on a blue background", "unknown word 'pink'"),
        ("a red hexagon on a blue background", "unknown word 'hexagon'"),
    ],
)
def test_caption_errors(caption, message):
    with pytest.raises(ValueError, match=message):
        parse_caption(caption)


def test_image_shape_error():
    with pytest.raises(ValueError, match=r"image must be \(H, W, 3\)"):
        analyse(np.zeros((32, 32), dtype=np.uint8))
