"""Text-to-image jobs: VQ codes in raster order, or KL latents in cells from a flow or
diffusion head; previews as rows complete, then the final image."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mmntp.api import GenerationOutput, ImageChunk, ImageOutput
from mmntp.engine import codes_plan, continuous_plan
from mmntp.format import sequence
from mmntp.generation.context import LATENT_TOKENIZER
from mmntp.generation.jobs.base import Job, guidance_prompt


@dataclass
class ImageJob(Job):
    """Text-to-image, guided by default: VQ codes in raster order (head "vq"), or KL latents
    in k x k cells from a flow or diffusion head (continuous positions, next-X)."""

    heavy_decode = True
    size: tuple[int, int] = (0, 0)  # output (width, height)
    grid: tuple[int, int] = (1, 1)  # token (or latent) rows, columns
    every: int = 2  # preview every this many token rows
    decoder: Any = None
    final: np.ndarray | None = None
    cells: int = 0  # k of the k x k latent cells; 0 = VQ codes
    pending: list = field(default_factory=list)  # cells of the cell row in progress

    @classmethod
    def build(cls, ctx, parts, output: ImageOutput, sampling):
        """`parts` is the validated caption; `output.head` one the model has."""
        text, vocab = ctx.tokenizer("text"), ctx.vocab
        ids = ctx.checked_prompt(sequence.image_prompt(vocab, text, parts[0].text))
        if output.head == "vq":
            tok = ctx.tokenizer("image")
            start = vocab.range("image").start
            lo, hi = tok.sample_range
            segment = codes_plan(tok.num_tokens, [(start + lo, start + hi)], "image")
            cells = 0
        else:
            tok = ctx.tokenizer(LATENT_TOKENIZER)
            cells = ctx.latent_cells(output.head)
            positions = tok.num_tokens // (cells * cells)
            placeholder = vocab.special(sequence.LATENT_PLACEHOLDER)
            segment = continuous_plan(positions, output.head, placeholder, "image")
        uncond = guidance_prompt(sampling, lambda: sequence.image_prompt(vocab, text, None))
        # One side alone keeps the native (square) aspect: --width 64 is 64 x 64.
        width, height = output.width or output.height, output.height or output.width
        size = (width or tok.image_size, height or tok.image_size)
        every = output.preview_every_rows or 2
        job = cls(ctx, ids, segment, sampling, uncond_ids=uncond, size=size, every=every)
        job.grid, job.cells = tuple(tok.grid), cells
        job.decoder = tok.stream_decoder()
        return job

    def _pixels(self, image: torch.Tensor) -> np.ndarray:
        """float [3, S, S] in [0, 1] -> uint8 (height, width, 3) at the requested size."""
        from PIL import Image

        array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        if array.shape[1::-1] == self.size:
            return array
        return np.asarray(Image.fromarray(array).resize(self.size, Image.Resampling.BICUBIC))

    def chunks(self, step, ids, lps, vectors=None):
        rows, cols = self.grid
        if self.cells:
            preview, done = self._push_cell(vectors[0]), (step + 1) // (cols // self.cells)
            done *= self.cells  # latent rows
        else:
            preview = self.decoder.push(ids[:1] - self.ctx.vocab.range("image").start)
            done = (step + 1) // cols
        if preview is not None and done < rows and done % self.every == 0:
            yield ImageChunk.from_pixels(self._pixels(preview), done, rows, False)

    def _push_cell(self, cell: torch.Tensor):
        """Cells wait until their cell row is complete, then go in as k latent rows."""
        self.pending.append(cell.float().cpu())
        k, cols = self.cells, self.grid[1]
        if len(self.pending) < cols // k:
            return None
        row = sequence.from_cells(torch.stack(self.pending), (k, cols), k)  # [k * cols, C]
        self.pending = []
        return self.decoder.push(row)

    def flush(self):
        rows = self.grid[0]
        self.final = self._pixels(self.decoder.flush())
        yield ImageChunk.from_pixels(self.final, rows, rows, True)

    def output(self, ids, lps, reason):
        return GenerationOutput("image", ids, lps, reason, image=self.final)
