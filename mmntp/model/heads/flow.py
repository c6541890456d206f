"""The rectified-flow head: x_t = (1 - sigma) * x0 + sigma * noise, the net predicts the
velocity noise - x0 (the convention of `FlowMatchEulerDiscreteScheduler`: its `step` is
x + (sigma_next - sigma) * v with sigma going 1 -> 0), sigma logit-normal in training
(SD3), Euler sampling with that scheduler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from mmntp.model.heads.config import (
    LEGACY_FIELDS,
    DenoiserConfig,
    as_denoiser,
    check_settings,
    finite,
)
from mmntp.model.heads.latent import NUM_TRAIN_TIMESTEPS, DenoisingHead, randn

if TYPE_CHECKING:
    from diffusers import FlowMatchEulerDiscreteScheduler


@dataclass
class FlowHeadConfig:
    """Flow-matching head: denoiser shape plus training and sampling defaults."""

    denoiser: DenoiserConfig
    num_steps: int = 50
    temperature: float = 1.0
    logit_mean: float = 0.0  # sigma = sigmoid(N(logit_mean, logit_std)) in training (SD3)
    logit_std: float = 1.0
    shift: float = 1.0  # FlowMatchEulerDiscreteScheduler's timestep shift
    ignored_fields: ClassVar[tuple[str, ...]] = LEGACY_FIELDS

    def __post_init__(self) -> None:
        self.denoiser = as_denoiser(self.denoiser)
        check_settings(self, NUM_TRAIN_TIMESTEPS)
        finite("logit_mean", self.logit_mean)
        finite("logit_std", self.logit_std)
        if self.logit_std <= 0:
            raise ValueError(f"logit_std must be > 0, got {self.logit_std}")
        finite("shift", self.shift)
        if self.shift <= 0:
            raise ValueError(f"shift must be > 0, got {self.shift}")


class FlowHead(DenoisingHead):
    """Rectified-flow head: velocity prediction, logit-normal sigma, Euler sampling."""

    type_name = "flow"

    def _new_scheduler(self) -> FlowMatchEulerDiscreteScheduler:
        from diffusers import FlowMatchEulerDiscreteScheduler  # seconds to import: lazily

        return FlowMatchEulerDiscreteScheduler(
            num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=self.config.shift
        )

    @staticmethod
    def noisy(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x_sigma = (1 - sigma) x0 + sigma noise; sigma [R] (the scheduler's `scale_noise`)."""
        s = sigma[:, None].to(x0.dtype)  # s: [R, 1]
        return (1 - s) * x0 + s * noise

    def _training_pair(self, x0: torch.Tensor, generator: torch.Generator | None):
        """Logit-normal sigma; the target is the velocity noise - x0."""
        r, device = x0.shape[0], x0.device
        normal = randn((r,), generator, device)  # [R]
        sigma = torch.sigmoid(normal * self.config.logit_std + self.config.logit_mean)
        noise = randn(tuple(x0.shape), generator, device)  # [R, W]
        x_t = self.noisy(x0.float(), noise, sigma)
        return x_t, sigma * NUM_TRAIN_TIMESTEPS, noise - x0.float()
