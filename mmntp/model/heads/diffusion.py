"""The diffusion head: DDPM with the cosine (`squaredcos_cap_v2`) schedule, epsilon or v
prediction, trained through `DDPMScheduler.add_noise`, sampled with `DDIMScheduler`
(eta 0, so deterministic given the initial noise)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from mmntp.model.heads.config import LEGACY_FIELDS, DenoiserConfig, as_denoiser, check_settings
from mmntp.model.heads.latent import NUM_TRAIN_TIMESTEPS, DenoisingHead, randn

if TYPE_CHECKING:
    from diffusers import DDIMScheduler, DDPMScheduler

BETA_SCHEDULE = "squaredcos_cap_v2"  # the cosine schedule MAR uses
PREDICTIONS = {"epsilon": "epsilon", "v": "v_prediction"}  # config value -> diffusers name
SPACINGS = ("leading", "trailing", "linspace")  # DDIMScheduler's timestep_spacing values


@dataclass
class DiffusionHeadConfig:
    """DDPM/DDIM head: denoiser shape, prediction target and sampling defaults."""

    denoiser: DenoiserConfig
    num_steps: int = 50
    temperature: float = 1.0
    prediction: str = "epsilon"  # "epsilon" or "v"
    spacing: str | None = None  # DDIM timestep_spacing; None = by prediction (see below)
    ignored_fields: ClassVar[tuple[str, ...]] = LEGACY_FIELDS

    def __post_init__(self) -> None:
        self.denoiser = as_denoiser(self.denoiser)
        check_settings(self, NUM_TRAIN_TIMESTEPS)
        if self.prediction not in PREDICTIONS:
            raise ValueError(
                f"prediction must be one of {sorted(PREDICTIONS)}, got {self.prediction!r}"
            )
        if self.spacing is None:
            # The capped cosine schedule leaves alpha_bar(999) ~ 2e-9: an epsilon net's
            # error there is multiplied ~1e3 by the first DDIM step, so epsilon starts
            # one stride below (diffusers' "leading"); v stays well-conditioned at t = 999
            # ("trailing", which also makes a 1-step schedule start from noise).
            self.spacing = "leading" if self.prediction == "epsilon" else "trailing"
        if self.spacing not in SPACINGS:
            raise ValueError(f"spacing must be one of {list(SPACINGS)}, got {self.spacing!r}")


class DiffusionHead(DenoisingHead):
    """DDPM head (cosine schedule, epsilon or v prediction), sampled with DDIM."""

    type_name = "diffusion"

    def __init__(self, config: DiffusionHeadConfig) -> None:
        super().__init__(config)
        self._train_scheduler: DDPMScheduler | None = None  # add_noise only: no step state

    def _scheduler_kwargs(self) -> dict[str, Any]:
        return dict(
            num_train_timesteps=NUM_TRAIN_TIMESTEPS,
            beta_schedule=BETA_SCHEDULE,
            prediction_type=PREDICTIONS[self.config.prediction],
            clip_sample=False,  # latents are not confined to [-1, 1]
        )

    def _new_scheduler(self) -> DDIMScheduler:
        from diffusers import DDIMScheduler  # seconds to import: lazily

        # set_alpha_to_one: the last step lands on the predicted x0 itself
        return DDIMScheduler(
            **self._scheduler_kwargs(),
            set_alpha_to_one=True,
            timestep_spacing=self.config.spacing,
        )

    def _step(self, scheduler, out, t, x):
        # an int timestep: DDIM indexes its CPU alphas with it
        return scheduler.step(out, int(t), x, eta=0.0).prev_sample

    def train_scheduler(self) -> DDPMScheduler:
        if self._train_scheduler is None:
            from diffusers import DDPMScheduler  # seconds to import: lazily

            self._train_scheduler = DDPMScheduler(**self._scheduler_kwargs())
        return self._train_scheduler

    def _training_pair(self, x0: torch.Tensor, generator: torch.Generator | None):
        """Uniformly drawn timesteps; the target is epsilon (or v)."""
        r, device = x0.shape[0], x0.device
        uniform = torch.rand(r, generator=generator, device=_gen_device(generator, device))
        t = (uniform * NUM_TRAIN_TIMESTEPS).long().clamp_max(NUM_TRAIN_TIMESTEPS - 1).to(device)
        noise = randn(tuple(x0.shape), generator, device)  # [R, W]
        ddpm, x0 = self.train_scheduler(), x0.float()
        x_t = ddpm.add_noise(x0, noise, t)
        target = noise if self.config.prediction == "epsilon" else ddpm.get_velocity(x0, noise, t)
        return x_t, t.float(), target


def _gen_device(generator: torch.Generator | None, device) -> torch.device | str:
    return generator.device if generator is not None else device
