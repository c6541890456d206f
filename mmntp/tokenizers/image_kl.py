"""Continuous image tokenizer: a tiny diffusers `AutoencoderKL` (KL-regularised VAE).

A 32x32 image becomes an 8x8 grid of 4-d latents, i.e. latents (64, 4) in raster order.
`encode` returns the posterior mean (or a sample, given a generator) normalised as
`(z - shift_factor) * scaling_factor`, the two numbers measured on the training data so
that flow / diffusion heads see zero-mean unit-variance latents; `decode` undoes that.
diffusers is imported only when a tokenizer is built (its import takes seconds); the
weights are our own safetensors file, so loading never touches the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from mmntp.tokenizers.base import ContinuousTokenizer, Encoded, register_tokenizer
from mmntp.tokenizers.image import (
    AutoencoderCard,
    ImageStreamDecoder,
    gray_out_missing,
    grid_from_state,
    prepare_image,
)


def build_autoencoder_kl(
    block_out_channels: Sequence[int], layers_per_block: int, latent_channels: int
) -> torch.nn.Module:
    """A diffusers AutoencoderKL downsampling by 2^(len(block_out_channels) - 1)."""
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    n = len(block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        latent_channels=latent_channels,
        norm_num_groups=min(32, min(block_out_channels) // 4),
    )


@register_tokenizer
class KLImageTokenizer(AutoencoderCard, ContinuousTokenizer):
    """RGB image <-> latents (grid_h * grid_w, latent_channels) in raster order."""

    type_name: ClassVar[str] = "image_kl"
    modality: ClassVar[str] = "image"

    def __init__(
        self,
        image_size: int = 32,
        block_out_channels: Sequence[int] = (32, 64, 64),
        layers_per_block: int = 1,
        latent_channels: int = 4,
        scaling_factor: float = 1.0,
        shift_factor: float = 0.0,
        seed: int = 0,
    ) -> None:
        channels = [int(c) for c in block_out_channels]
        factor = 2 ** (len(channels) - 1)
        if not channels or any(c < 4 or c % 4 for c in channels):
            raise ValueError(f"block_out_channels must be multiples of 4, got {channels}")
        if image_size < factor or image_size % factor:
            raise ValueError(f"image_size must be a multiple of {factor}, got {image_size}")
        if not scaling_factor > 0:
            raise ValueError(f"scaling_factor must be > 0, got {scaling_factor}")
        self.image_size, self.block_out_channels = int(image_size), channels
        self.layers_per_block, self.latent_dim = int(layers_per_block), int(latent_channels)
        self.scaling_factor, self.shift_factor = float(scaling_factor), float(shift_factor)
        self.seed = int(seed)
        self.grid = (self.image_size // factor, self.image_size // factor)
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            self.model = build_autoencoder_kl(channels, layers_per_block, latent_channels)
        self.model.eval()

    @property
    def num_tokens(self) -> int:
        """Latent vectors per image: grid_h * grid_w."""
        return self.grid[0] * self.grid[1]

    @torch.no_grad()
    def encode_batch(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """images: [B, 3, S, S] in [0, 1] -> normalised latents [B, h*w, C].

        The posterior mean, or a posterior sample when `generator` is given.
        """
        dist = self.model.encode(images * 2 - 1).latent_dist
        z = dist.mean if generator is None else dist.sample(generator)  # z: [B, C, h, w]
        z = (z - self.shift_factor) * self.scaling_factor
        return z.flatten(2).transpose(1, 2)  # [B, h*w, C]

    @torch.no_grad()
    def decode_batch(self, latents: torch.Tensor) -> torch.Tensor:
        """latents: [B, h*w, C] (normalised) -> images [B, 3, S, S] in [0, 1]."""
        b = latents.shape[0]
        z = latents.transpose(1, 2).reshape(b, self.latent_dim, *self.grid)  # [B, C, h, w]
        z = z / self.scaling_factor + self.shift_factor
        return ((self.model.decode(z).sample + 1) / 2).clamp(0, 1)

    def encode(
        self,
        image: Any,
        state: dict[str, Any] | None = None,
        generator: torch.Generator | None = None,
    ) -> Encoded:
        """An image (PIL, uint8 array or tensor [3, H, W]) -> latents (h*w, C) float32.

        Resized (short side) and center-cropped to `image_size` first; `state` is
        {"grid": [h, w]}. Pass `generator` for a posterior sample instead of the mean.
        """
        x = prepare_image(image, self.image_size)  # x: [3, S, S]
        latents = self.encode_batch(x[None], generator)[0]
        return Encoded(latents, {"grid": list(self.grid)})

    def decode(self, latents: torch.Tensor, state: dict[str, Any] | None = None) -> torch.Tensor:
        """Latents (h*w, C) in raster order -> float image [3, S, S] in [0, 1]."""
        grid = grid_from_state(state, self.grid)
        latents = torch.as_tensor(latents)
        shape = (grid[0] * grid[1], self.latent_dim)
        if not latents.is_floating_point() or tuple(latents.shape) != shape:
            raise ValueError(
                f"KLImageTokenizer.decode: latents must be float shaped {shape}, got "
                f"{latents.dtype} {tuple(latents.shape)}"
            )
        if not torch.isfinite(latents).all():
            raise ValueError("KLImageTokenizer.decode: latents contain NaN or ±inf")
        return self.decode_batch(latents.float()[None])[0]

    def stream_decoder(self, state: dict[str, Any] | None = None) -> ImageStreamDecoder:
        """Row-by-row previews; missing latents are 0 (the latent mean), their pixels gray."""
        grid = grid_from_state(state, self.grid)

        def decode_grid(latents: torch.Tensor, n_known: int) -> torch.Tensor:
            return gray_out_missing(self.decode(latents, {"grid": list(grid)}), grid, n_known)

        return ImageStreamDecoder(decode_grid, grid, torch.zeros(self.latent_dim))

    def config(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "block_out_channels": self.block_out_channels,
            "layers_per_block": self.layers_per_block,
            "latent_channels": self.latent_dim,
            "scaling_factor": self.scaling_factor,
            "shift_factor": self.shift_factor,
            "seed": self.seed,
        }
