"""`mmntp eval image`: prompt adherence and speed of text-to-image, per head and guidance.

Adherence: images generated for procedural captions (`a {color} {shape} on a
{background} background`, combinations drawn from a seed) are judged by the plain image
analysis in `mmntp.eval.adherence`: the fraction with the right shape colour, the right
shape, and both. Speed: time to the first preview and to the final image of one request
alone, and images per second for a batch of 16 submitted together.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from mmntp.api import ImageChunk, ImageOutput
from mmntp.api.sampling import defaults as sampling_defaults
from mmntp.data.images import COLORS, SHAPES
from mmntp.eval.adherence import check

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ImageEvalSettings:
    # 1,000: at 80 % one standard error is 1.3 points (48 captions, the default until
    # 2026-12-07, left 5.8 and could not tell 77 % from 83 %)
    num_prompts: int = 1000
    heads: tuple[str, ...] = ("vq",)
    guidance: tuple[float, ...] = (1.0, 3.0)
    seed: int = 0
    batch: int = 16  # images per second is measured at this batch size

    def __post_init__(self) -> None:
        if self.num_prompts < 1 or self.batch < 1:
            raise ValueError("num_prompts and batch must be >= 1")
        if not self.heads or not self.guidance:
            raise ValueError("pick at least one head and one guidance scale")
        if any(g < 0 for g in self.guidance):
            raise ValueError(f"guidance scales must be >= 0, got {self.guidance}")


def captions(n: int, seed: int) -> list[str]:
    """n procedural captions; the shape's colour never equals the background's."""
    rng = np.random.default_rng(seed)
    names, out = list(COLORS), []
    for _ in range(n):
        color, background = rng.choice(len(names), size=2, replace=False)
        shape = SHAPES[rng.integers(len(SHAPES))]
        out.append(f"a {names[color]} {shape} on a {names[background]} background")
    return out


def adherence(pipe: Any, prompts: Sequence[str], head: str, scale: float, seed: int) -> dict:
    """Colour / shape / both accuracy of one head at one guidance scale."""
    sampling = replace(sampling_defaults("image"), guidance_scale=scale)
    items = [
        (p, ImageOutput(head=head), replace(sampling, seed=seed + i)) for i, p in enumerate(prompts)
    ]
    results = pipe.generate_many(items)
    verdicts = [check(r.image, p) for r, p in zip(results, prompts)]
    n = len(verdicts)
    return {
        "head": head,
        "guidance": scale,
        "images": n,
        "color": sum(v.color_ok for v in verdicts) / n,
        "shape": sum(v.shape_ok for v in verdicts) / n,
        "both": sum(v.color_ok and v.shape_ok for v in verdicts) / n,
    }


def speed(pipe: Any, head: str, scale: float, batch: int, prompt: str) -> dict:
    """Seconds to the first preview and the final image alone; images/s for `batch` at once."""
    sampling = replace(sampling_defaults("image"), guidance_scale=scale, seed=0)
    start, first = time.perf_counter(), None
    for chunk in pipe.stream(prompt, ImageOutput(head=head), sampling):
        if isinstance(chunk, ImageChunk) and first is None:
            first = time.perf_counter() - start
    alone = time.perf_counter() - start
    items = [(prompt, ImageOutput(head=head), replace(sampling, seed=i)) for i in range(batch)]
    start = time.perf_counter()
    pipe.generate_many(items)
    return {
        "head": head,
        "guidance": scale,
        "first_preview_s": first,
        "final_s": alone,
        "batch": batch,
        "images_per_s": batch / (time.perf_counter() - start),
    }


def evaluate(pipe: Any, settings: ImageEvalSettings, progress: Progress = lambda _: None) -> dict:
    prompts = captions(settings.num_prompts, settings.seed)
    rows, timings = [], []
    pipe(prompts[0], ImageOutput(head=settings.heads[0]))  # warm-up: allocations, kernels
    for head in settings.heads:
        for scale in settings.guidance:
            progress(f"{head}, guidance {scale:g}: {len(prompts)} images")
            rows.append(adherence(pipe, prompts, head, scale, settings.seed))
            timings.append(speed(pipe, head, scale, settings.batch, prompts[0]))
    return {
        "benchmark": "image",
        "settings": {
            "num_prompts": settings.num_prompts,
            "heads": list(settings.heads),
            "guidance": list(settings.guidance),
            "seed": settings.seed,
            "sampling": {
                "temperature": sampling_defaults("image").temperature,
                "top_k": sampling_defaults("image").top_k,
            },
        },
        "adherence": rows,
        "speed": timings,
    }


def format_table(report: dict) -> str:
    lines = ["head       guidance  colour  shape  both   first preview  final   images/s (batch)"]
    for a, s in zip(report["adherence"], report["speed"]):
        lines.append(
            f"{a['head']:<10} {a['guidance']:<9g} {a['color']:6.1%} {a['shape']:6.1%} "
            f"{a['both']:6.1%} {s['first_preview_s'] * 1e3:9.0f} ms {s['final_s'] * 1e3:6.0f} ms "
            f"{s['images_per_s']:7.1f} ({s['batch']})"
        )
    return "\n".join(lines)
