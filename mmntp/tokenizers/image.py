"""Image tokenizers' shared parts and the VQ image tokenizer (LlamaGen-style quantizer).

`VQImageTokenizer` is a small convolutional autoencoder (downsample x4: a 32x32 image is
an 8x8 grid = 64 codes in raster order) with a LlamaGen `VectorQuantizer`: low-dimensional
codes, l2-normalised codes and encoder outputs, nearest code by cosine, straight-through
estimator, codebook loss + 0.25 x commitment loss, usage tracking and dead-code restarts.
It is our own code (diffusers' `VQModel` has no l2 option). The input handling and the
row-by-row stream decoder are shared with the KL tokenizer (`image_kl.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmntp.tokenizers.base import (
    AutoencoderCard,
    DiscreteTokenizer,
    Encoded,
    StreamDecoder,
    as_codes,
    register_tokenizer,
)
from mmntp.tokenizers.vq import CodeUsage

# -- input handling -------------------------------------------------------------------


def image_to_tensor(image: Any) -> torch.Tensor:
    """A PIL image, uint8 array (H, W, 3) / (H, W) or tensor [3, H, W] -> float [3, H, W].

    Float tensors must already be in [0, 1]; uint8 tensors [3, H, W] are divided by 255.
    Every problem (wrong shape or dtype, empty, non-finite, out of range) is a ValueError.
    """
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image.Image
        if 0 in image.size:
            raise ValueError(f"image is empty: PIL size {image.size}")
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        return _array_to_tensor(image)
    if not isinstance(image, torch.Tensor):
        raise ValueError(
            f"image must be a PIL image, a uint8 array or a tensor [3, H, W], got "
            f"{type(image).__name__}"
        )
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image tensor must be shaped [3, H, W], got {tuple(image.shape)}")
    if image.numel() == 0:
        raise ValueError(f"image is empty: shape {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        return image.float() / 255.0
    if not image.is_floating_point():
        raise ValueError(f"image tensor must be float in [0, 1] or uint8, got {image.dtype}")
    image = image.detach().cpu().float()
    if not torch.isfinite(image).all():
        raise ValueError("image tensor contains NaN or ±inf")
    lo, hi = float(image.min()), float(image.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"image tensor values must lie in [0, 1], got range [{lo:g}, {hi:g}]")
    return image.clamp(0, 1)


def _array_to_tensor(array: np.ndarray) -> torch.Tensor:
    if array.dtype != np.uint8:
        raise ValueError(
            f"image arrays must be uint8 (H, W, 3) or (H, W), got dtype {array.dtype} "
            "(pass floats as a tensor [3, H, W] in [0, 1])"
        )
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image array must be shaped (H, W, 3) or (H, W), got {array.shape}")
    if array.size == 0:
        raise ValueError(f"image is empty: shape {array.shape}")
    # np.array copies: PIL's arrays are read-only, which torch.from_numpy warns about.
    return torch.from_numpy(np.array(array)).permute(2, 0, 1).float() / 255.0


def fit_to_size(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resizes [3, H, W] so the short side is `size` (antialiased), then center-crops."""
    _, h, w = image.shape
    if (h, w) == (size, size):
        return image
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    resized = F.interpolate(
        image[None], size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
    )[0]  # resized: [3, new_h, new_w]
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resized[:, top : top + size, left : left + size].clamp(0, 1)


def prepare_image(image: Any, size: int) -> torch.Tensor:
    """Any accepted image form -> float [3, size, size] in [0, 1]."""
    return fit_to_size(image_to_tensor(image), size)


def grid_from_state(state: dict[str, Any] | None, default: tuple[int, int]) -> tuple[int, int]:
    """The (rows, cols) token grid named by `state["grid"]`, or the tokenizer's default."""
    grid = (state or {}).get("grid", default)
    if (
        not isinstance(grid, Sequence)
        or len(grid) != 2
        or not all(isinstance(g, int) and not isinstance(g, bool) for g in grid)
    ):
        raise ValueError(f"state['grid'] must be [rows, cols] integers, got {grid!r}")
    if tuple(grid) != tuple(default):
        raise ValueError(f"state['grid'] {list(grid)} does not match this tokenizer's {default}")
    return int(grid[0]), int(grid[1])


# -- the autoencoder -------------------------------------------------------------------


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4), channels, eps=1e-6)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice plus a (1x1 where widths differ) skip."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class ConvEncoder(nn.Module):
    """[B, 3, H, W] -> [B, out_dim, H / f, W / f] for f = patch * 2^(len(channels) - 1).

    `patch` > 1 starts with a space-to-depth (pixel unshuffle), so no conv runs at full
    resolution: about half the compute of a full-resolution first stage.
    """

    def __init__(
        self, channels: Sequence[int], num_res_blocks: int, out_dim: int, patch: int = 1
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.PixelUnshuffle(patch)] if patch > 1 else []
        layers.append(nn.Conv2d(3 * patch * patch, channels[0], 3, padding=1))
        for i, c in enumerate(channels):
            c_prev = channels[max(i - 1, 0)]
            if i > 0:  # a strided conv halves the resolution between stages
                layers.append(nn.Conv2d(c_prev, c, 3, stride=2, padding=1))
            layers += [ResBlock(c, c) for _ in range(num_res_blocks)]
        layers += [ResBlock(channels[-1], channels[-1]), _norm(channels[-1]), nn.SiLU()]
        layers.append(nn.Conv2d(channels[-1], out_dim, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ConvDecoder(nn.Module):
    """The encoder's mirror: [B, in_dim, h, w] -> [B, 3, h * 2^(n-1), w * 2^(n-1)]."""

    def __init__(
        self, channels: Sequence[int], num_res_blocks: int, in_dim: int, patch: int = 1
    ) -> None:
        super().__init__()
        rev = list(channels)[::-1]
        layers: list[nn.Module] = [
            nn.Conv2d(in_dim, rev[0], 3, padding=1),
            ResBlock(rev[0], rev[0]),
        ]
        for i, c in enumerate(rev):
            if i > 0:  # nearest upsampling then a conv, which avoids checkerboard artefacts
                layers += [nn.Upsample(scale_factor=2, mode="nearest")]
                layers += [nn.Conv2d(rev[i - 1], c, 3, padding=1)]
            layers += [ResBlock(c, c) for _ in range(num_res_blocks)]
        layers += [_norm(rev[-1]), nn.SiLU(), nn.Conv2d(rev[-1], 3 * patch * patch, 3, padding=1)]
        if patch > 1:
            layers.append(nn.PixelShuffle(patch))
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)


@dataclass
class QuantizerOutput:
    """What `VectorQuantizer.forward` returns; the losses are 0-d tensors."""

    z_q: torch.Tensor  # [B, D, h, w] unit vectors, straight-through to the encoder
    codes: torch.Tensor  # [B, h, w] long
    codebook_loss: torch.Tensor  # pulls codes towards the (detached) encoder outputs
    commit_loss: torch.Tensor  # beta x pull of encoder outputs towards their (detached) codes
    perplexity: torch.Tensor  # exp(entropy) of this batch's code histogram

    @property
    def loss(self) -> torch.Tensor:
        return self.codebook_loss + self.commit_loss


class VectorQuantizer(CodeUsage, nn.Module):
    """LlamaGen's quantizer: cosine nearest code over l2-normalised low-dim codes."""

    def __init__(
        self, codebook_size: int, code_dim: int, beta: float = 0.25, usage_decay: float = 0.99
    ) -> None:
        super().__init__()
        self.codebook_size, self.code_dim, self.beta = codebook_size, code_dim, beta
        self.usage_decay = usage_decay
        self.embedding = nn.Parameter(torch.randn(codebook_size, code_dim))  # [K, D]
        # Training-time bookkeeping, not saved: an EMA of how often each code is chosen
        # (per batch, as a fraction) and a ring of recent encoder outputs to restart from.
        self.register_buffer("usage", torch.full((codebook_size,), 1.0 / codebook_size), False)
        self.register_buffer("recent", torch.zeros(0, code_dim), False)

    def codebook(self) -> torch.Tensor:
        """The l2-normalised codes [K, D]."""
        return F.normalize(self.embedding, dim=-1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [...] -> unit code vectors [..., D]."""
        return self.codebook()[codes]

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Rows [N, D] (any norm) -> index [N] of the code with the largest cosine."""
        return (F.normalize(z, dim=-1) @ self.codebook().T).argmax(dim=-1)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        b, d, h, w = z.shape
        flat = F.normalize(z.permute(0, 2, 3, 1).reshape(-1, d), dim=-1)  # flat: [B*h*w, D]
        codes = self.nearest(flat)  # [B*h*w]
        quant = self.lookup(codes)  # [B*h*w, D]
        codebook_loss = F.mse_loss(quant, flat.detach())
        commit_loss = self.beta * F.mse_loss(flat, quant.detach())
        straight = flat + (quant - flat).detach()  # value of quant, gradient of flat
        perplexity = self.track_usage(codes, flat)
        z_q = straight.reshape(b, h, w, d).permute(0, 3, 1, 2)  # z_q: [B, D, h, w]
        return QuantizerOutput(z_q, codes.reshape(b, h, w), codebook_loss, commit_loss, perplexity)


class VQAutoencoder(nn.Module):
    """Encoder -> quantizer -> decoder; images in [-1, 1] at the module boundary."""

    def __init__(
        self,
        channels: Sequence[int],
        num_res_blocks: int,
        code_dim: int,
        codebook_size: int,
        beta: float,
        patch: int = 1,
    ) -> None:
        super().__init__()
        self.encoder = ConvEncoder(channels, num_res_blocks, code_dim, patch)
        self.quantizer = VectorQuantizer(codebook_size, code_dim, beta)
        self.decoder = ConvDecoder(channels, num_res_blocks, code_dim, patch)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, QuantizerOutput]:
        """x: [B, 3, H, W] in [-1, 1] -> reconstruction [B, 3, H, W] and the quantizer's output."""
        q = self.quantizer(self.encoder(x))
        return self.decoder(q.z_q), q

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes: [B, h, w] -> reconstruction [B, 3, H, W] in about [-1, 1]."""
        z_q = self.quantizer.lookup(codes).permute(0, 3, 1, 2)  # z_q: [B, D, h, w]
        return self.decoder(z_q)


# -- streaming ---------------------------------------------------------------------------


class ImageStreamDecoder(StreamDecoder):
    """Previews an image row by row while its tokens are generated.

    `push(tokens)` takes the next tokens in raster order: codes (n,) for a discrete
    tokenizer, latents (n, latent_dim) for a continuous one; any n, e.g. one token or whole
    rows. When the push completes at least one more grid row it returns a preview: a float
    image [3, H, W] in [0, 1] with the rows so far decoded and the image rows of the
    missing grid rows gray (0.5); otherwise it returns None. Once every row has arrived,
    the preview is the full decode. `flush()` returns the final image (the full decode, or
    the preview of whatever arrived, a partial row included, if the stream ended short).
    """

    def __init__(
        self,
        decode_grid: Callable[[torch.Tensor, int], torch.Tensor],
        grid: tuple[int, int],
        fill: torch.Tensor,
    ) -> None:
        self._decode_grid = decode_grid  # (tokens [rows*cols, ...], n_known) -> image
        self._grid = grid
        self._fill = fill  # one token's worth: 0-d code or (latent_dim,)
        self._tokens: list[torch.Tensor] = []
        self._n = 0
        self._rows_done = 0

    def push(self, tokens: torch.Tensor) -> torch.Tensor | None:
        tokens = torch.as_tensor(tokens)
        tokens = tokens.reshape(-1, *self._fill.shape)  # tokens: [n, *token_shape]
        rows, cols = self._grid
        if self._n + tokens.shape[0] > rows * cols:
            raise ValueError(
                f"image stream: {self._n + tokens.shape[0]} tokens pushed, the grid holds "
                f"{rows}x{cols} = {rows * cols}"
            )
        self._tokens.append(tokens)
        self._n += tokens.shape[0]
        if self._n // cols == self._rows_done:
            return None
        self._rows_done = self._n // cols
        return self._preview(self._rows_done * cols)

    def flush(self) -> torch.Tensor:
        return self._preview(self._n)

    def _preview(self, n_known: int) -> torch.Tensor:
        rows, cols = self._grid
        known = torch.cat(self._tokens)[:n_known] if n_known else self._fill[None][:0]
        missing = self._fill.expand(rows * cols - n_known, *self._fill.shape)
        full = torch.cat([known.to(self._fill.dtype), missing])  # full: [rows*cols, ...]
        return self._decode_grid(full, n_known)


def gray_out_missing(image: torch.Tensor, grid: tuple[int, int], n_known: int) -> torch.Tensor:
    """Sets the pixels of grid cells after the first `n_known` (raster order) to 0.5."""
    rows, cols = grid
    if n_known >= rows * cols:
        return image
    _, h, w = image.shape
    cell_h, cell_w = h // rows, w // cols
    out = image.clone()
    full_rows, partial = divmod(n_known, cols)
    out[:, (full_rows + 1) * cell_h :, :] = 0.5
    out[:, full_rows * cell_h : (full_rows + 1) * cell_h, partial * cell_w :] = 0.5
    return out


# -- the tokenizer ------------------------------------------------------------------------


@register_tokenizer
class VQImageTokenizer(AutoencoderCard, DiscreteTokenizer):
    """RGB image <-> codes (grid_h * grid_w,) in raster order, one codebook."""

    type_name: ClassVar[str] = "image_vq"
    modality: ClassVar[str] = "image"
    num_codebooks = 1

    def __init__(
        self,
        image_size: int = 32,
        channels: Sequence[int] = (32, 64, 128),
        num_res_blocks: int = 1,
        code_dim: int = 8,
        codebook_size: int = 1024,
        beta: float = 0.25,
        patch: int = 1,
        seed: int = 0,
    ) -> None:
        channels = [int(c) for c in channels]
        if not channels or any(c < 4 or c % 4 for c in channels):
            raise ValueError(f"channels must be multiples of 4 (>= 4), got {channels}")
        if patch not in (1, 2, 4):
            raise ValueError(f"patch must be 1, 2 or 4, got {patch}")
        factor = patch * 2 ** (len(channels) - 1)
        if image_size < factor or image_size % factor:
            raise ValueError(f"image_size must be a multiple of {factor}, got {image_size}")
        if codebook_size < 2 or code_dim < 1:
            raise ValueError(f"bad codebook: size {codebook_size}, dim {code_dim}")
        self.image_size, self.channels = int(image_size), channels
        self.num_res_blocks, self.code_dim = int(num_res_blocks), int(code_dim)
        self.codebook_size, self.beta, self.seed = int(codebook_size), float(beta), int(seed)
        self.patch = int(patch)
        self.grid = (self.image_size // factor, self.image_size // factor)
        self.codebook_sizes = [self.codebook_size]
        self.sample_range = (0, self.codebook_size)
        with torch.random.fork_rng():  # a fresh tokenizer's weights depend on `seed` only
            torch.manual_seed(self.seed)
            self.model = VQAutoencoder(
                channels, num_res_blocks, code_dim, codebook_size, beta, patch
            )
        self.model.eval()

    @property
    def num_tokens(self) -> int:
        """Tokens per image: grid_h * grid_w."""
        return self.grid[0] * self.grid[1]

    @torch.no_grad()
    def encode_batch(self, images: torch.Tensor) -> torch.Tensor:
        """images: [B, 3, S, S] in [0, 1] at the tokenizer's size -> codes [B, h*w]."""
        z = self.model.encoder(images * 2 - 1)  # z: [B, D, h, w]
        codes = self.model.quantizer.nearest(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]))
        return codes.reshape(images.shape[0], -1)

    @torch.no_grad()
    def decode_batch(self, codes: torch.Tensor) -> torch.Tensor:
        """codes: [B, h*w] -> images [B, 3, S, S] in [0, 1]."""
        grid = codes.reshape(codes.shape[0], *self.grid)  # grid: [B, h, w]
        return ((self.model.decode_codes(grid) + 1) / 2).clamp(0, 1)

    def encode(self, image: Any, state: dict[str, Any] | None = None) -> Encoded:
        """An image (PIL, uint8 array or tensor [3, H, W]) -> codes (h*w,), raster order.

        The image is resized (short side) and center-cropped to `image_size` first.
        `state` is {"grid": [h, w]}.
        """
        x = prepare_image(image, self.image_size)  # x: [3, S, S]
        return Encoded(self.encode_batch(x[None])[0], {"grid": list(self.grid)})

    def decode(self, codes: torch.Tensor, state: dict[str, Any] | None = None) -> torch.Tensor:
        """Codes (h*w,) in raster order -> float image [3, S, S] in [0, 1]."""
        grid = grid_from_state(state, self.grid)
        codes = as_codes(codes, self.codebook_size, "VQImageTokenizer.decode")
        if codes.dim() != 1 or codes.numel() != grid[0] * grid[1]:
            raise ValueError(
                f"VQImageTokenizer.decode: codes must be shaped ({grid[0] * grid[1]},), "
                f"got {tuple(codes.shape)}"
            )
        return self.decode_batch(codes[None])[0]

    def fill_code(self) -> int:
        """The code nearest the codebook's mean direction: what previews put in missing cells."""
        with torch.no_grad():
            return int(self.model.quantizer.nearest(self.model.quantizer.codebook().mean(0)[None]))

    def stream_decoder(self, state: dict[str, Any] | None = None) -> ImageStreamDecoder:
        """Row-by-row previews; see `ImageStreamDecoder` for what push takes and returns."""
        grid = grid_from_state(state, self.grid)

        def decode_grid(codes: torch.Tensor, n_known: int) -> torch.Tensor:
            return gray_out_missing(self.decode(codes, {"grid": list(grid)}), grid, n_known)

        return ImageStreamDecoder(decode_grid, grid, torch.tensor(self.fill_code()))

    def config(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "channels": self.channels,
            "num_res_blocks": self.num_res_blocks,
            "code_dim": self.code_dim,
            "codebook_size": self.codebook_size,
            "beta": self.beta,
            "patch": self.patch,
            "seed": self.seed,
        }
