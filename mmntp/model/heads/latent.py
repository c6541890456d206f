"""Continuous output heads: a small adaLN MLP denoiser driven by diffusers' schedulers.

Both heads read the transformer's hidden state z [R, D] at a continuous position and turn
seeded noise into a vector [R, width], as MAR's diffusion loss does (`SimpleMLPAdaLN`):

- `FlowHead`: rectified flow. x_t = (1 - sigma) * x0 + sigma * noise, the net predicts the
  velocity noise - x0 (the convention of `FlowMatchEulerDiscreteScheduler`: its `step` is
  x + (sigma_next - sigma) * v with sigma going 1 -> 0), sigma logit-normal in training,
  Euler sampling with that scheduler.
- `DiffusionHead`: DDPM with the cosine (`squaredcos_cap_v2`) schedule, epsilon or v
  prediction, trained through `DDPMScheduler.add_noise`, sampled with `DDIMScheduler`
  (eta 0, so deterministic given the initial noise).

Per-request randomness: the only random draw at sampling time is each row's initial
noise, taken from that row's own generator and scaled by its temperature (MAR scales the
noise of its stochastic sampler; with deterministic steppers the initial noise is all
there is). Scheduler steps are elementwise with scalar coefficients, so rows do not mix;
a stochastic step (DDIM eta > 0, flow `stochastic_sampling`) would draw from one generator
for the whole group, which is why neither is used.

diffusers is imported on first use (it takes seconds), not when this module is.

Schedulers keep state (`_step_index`), so a fresh instance is made for every group of rows
sharing a step count within one call; none is kept on the module or shared across calls.

Per-request settings (num_steps, temperature, guidance_scale) come from, in order:
the `settings` mapping (request_id -> `ContinuousSettings`), fields of the same name on
`request.params` (`SamplingParams`; `temperature` is its existing field, `num_steps` and
`guidance_scale` are read when present), then the head's config defaults.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mmntp.model.frame_head import FrameHead, FrameHeadConfig

if TYPE_CHECKING:
    from diffusers import DDIMScheduler, DDPMScheduler, FlowMatchEulerDiscreteScheduler

FREQ_DIM = 256  # sinusoidal time features before the time MLP (MAR / DiT)
NUM_TRAIN_TIMESTEPS = 1000  # the time scale both heads feed the net: [0, 1000]
BETA_SCHEDULE = "squaredcos_cap_v2"  # the cosine schedule MAR uses
PREDICTIONS = {"epsilon": "epsilon", "v": "v_prediction"}  # config value -> diffusers name
SPACINGS = ("leading", "trailing", "linspace")  # DDIMScheduler's timestep_spacing values


# -- configs ----------------------------------------------------------------------------


@dataclass
class DenoiserConfig:
    """Shape of the adaLN MLP denoiser.

    width: the vector the head reads and writes, a latent token's dim times `cells`
    (xAR-style k x k cells are predicted together as one flattened vector);
    cond_dim: the transformer's hidden size D; hidden / depth: the MLP's size;
    above: how many positions back the vector sits that also conditions the net (the
    cells per row of a raster, for the cell above the one predicted); 0 = none.
    """

    width: int
    cond_dim: int
    hidden: int = 256
    depth: int = 3
    cells: int = 1
    above: int = 0

    def __post_init__(self) -> None:
        for name in ("width", "cond_dim", "hidden", "depth", "cells"):
            positive_int(name, getattr(self, name))
        if not isinstance(self.above, int) or isinstance(self.above, bool) or self.above < 0:
            raise ValueError(f"above must be an integer >= 0, got {self.above!r}")
        if self.width % self.cells:
            raise ValueError(
                f"width={self.width} must be a multiple of cells={self.cells} "
                "(width = token dim x cells)"
            )

    @property
    def token_dim(self) -> int:
        return self.width // self.cells


@dataclass
class FlowHeadConfig:
    """Flow-matching head: denoiser shape plus training and sampling defaults."""

    denoiser: DenoiserConfig
    num_steps: int = 50
    temperature: float = 1.0
    guidance_scale: float = 1.0
    logit_mean: float = 0.0  # sigma = sigmoid(N(logit_mean, logit_std)) in training (SD3)
    logit_std: float = 1.0
    shift: float = 1.0  # FlowMatchEulerDiscreteScheduler's timestep shift

    def __post_init__(self) -> None:
        self.denoiser = _as_denoiser(self.denoiser)
        _check_settings(self, NUM_TRAIN_TIMESTEPS)
        _finite("logit_mean", self.logit_mean)
        _finite("logit_std", self.logit_std)
        if self.logit_std <= 0:
            raise ValueError(f"logit_std must be > 0, got {self.logit_std}")
        _finite("shift", self.shift)
        if self.shift <= 0:
            raise ValueError(f"shift must be > 0, got {self.shift}")


@dataclass
class DiffusionHeadConfig:
    """DDPM/DDIM head: denoiser shape, prediction target and sampling defaults."""

    denoiser: DenoiserConfig
    num_steps: int = 50
    temperature: float = 1.0
    guidance_scale: float = 1.0
    prediction: str = "epsilon"  # "epsilon" or "v"
    spacing: str | None = None  # DDIM timestep_spacing; None = by prediction (see below)

    def __post_init__(self) -> None:
        self.denoiser = _as_denoiser(self.denoiser)
        _check_settings(self, NUM_TRAIN_TIMESTEPS)
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


@dataclass(frozen=True)
class ContinuousSettings:
    """Per-request sampling settings for a continuous head; None falls through."""

    num_steps: int | None = None
    temperature: float | None = None  # scale of the initial noise; 0 = no noise
    guidance_scale: float | None = None  # 1 = conditional only

    def __post_init__(self) -> None:
        _check_settings(self, NUM_TRAIN_TIMESTEPS, allow_none=True)


def positive_int(name: str, value: Any) -> None:
    """ValueError naming `name` unless value is an int > 0 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _finite(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def _check_settings(obj: Any, max_steps: int, allow_none: bool = False) -> None:
    """Validate num_steps / temperature / guidance_scale on a config or settings object."""
    for name in ("num_steps", "temperature", "guidance_scale"):
        value = getattr(obj, name)
        if value is None and allow_none:
            continue
        if name == "num_steps":
            positive_int(name, value)
            if value > max_steps:
                raise ValueError(f"num_steps must be <= {max_steps}, got {value}")
        else:
            _finite(name, value)
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")


def _as_denoiser(value: DenoiserConfig | Mapping[str, Any]) -> DenoiserConfig:
    if isinstance(value, DenoiserConfig):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"denoiser must be a DenoiserConfig or a dict, got {type(value).__name__}")
    return _from_dict(DenoiserConfig, value, "denoiser")


def _from_dict(cls: type, data: Mapping[str, Any], where: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown fields: {', '.join(unknown)}")
    required = [f.name for f in fields(cls) if f.default is MISSING and f.name not in data]
    if required:
        raise ValueError(f"{where}: missing fields: {', '.join(required)}")
    return cls(**data)


# -- the denoiser -----------------------------------------------------------------------


def timestep_embedding(t: torch.Tensor, dim: int = FREQ_DIM) -> torch.Tensor:
    """Sinusoidal features of times t [R] on the [0, 1000] scale -> [R, dim] (DiT / MAR)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]  # args: [R, half]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class AdaLNBlock(nn.Module):
    """Residual MLP block whose LayerNorm shift/scale and output gate come from the condition."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 3 * hidden))

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(c).chunk(3, dim=-1)  # each [R, H]
        return h + gate * self.mlp(self.norm(h) * (1 + scale) + shift)


class AdaLNDenoiser(nn.Module):
    """x_t [R, W], time t [R], condition z [R, D] -> prediction [R, W] (MAR's SimpleMLPAdaLN).

    The condition is time embedding + projected z; every block's gate and the output layer
    start at zero, so the untrained head predicts 0 and each block starts as the identity.

    With `above`, the vector `above` positions back (the cell above; `above_rows`) is added
    to the input stream as well. The trunk's hidden state carries it too, but only through
    attention, and what the heads get wrong is carrying an edge's exact place down to the
    next cell row. Its projection starts at zero, so a head given it computes what it
    did without it until training says otherwise (`init_from` an older head).
    """

    def __init__(self, config: DenoiserConfig) -> None:
        super().__init__()
        h = config.hidden
        self.input_proj = nn.Linear(config.width, h)
        self.time_mlp = nn.Sequential(nn.Linear(FREQ_DIM, h), nn.SiLU(), nn.Linear(h, h))
        self.cond_proj = nn.Linear(config.cond_dim, h)
        # the vector above and a 1, or zeros and a 0 where there is none (the first row)
        self.above_proj = nn.Linear(config.width + 1, h) if config.above else None
        self.blocks = nn.ModuleList(AdaLNBlock(h) for _ in range(config.depth))
        self.final_norm = nn.LayerNorm(h, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(h, 2 * h))
        self.output = nn.Linear(h, config.width)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for m in (self.time_mlp[0], self.time_mlp[2]):
            nn.init.normal_(m.weight, std=0.02)
        zero = [b.modulation[1] for b in self.blocks] + [self.final_modulation[1], self.output]
        if self.above_proj is not None:
            zero.append(self.above_proj)
        for m in zero:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor, above: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`above` [R, W + 1] from `above_rows` (None: no row has one); ignored without
        config.above."""
        dtype = self.output.weight.dtype
        h = self.input_proj(x.to(dtype))  # h: [R, H]
        if self.above_proj is not None:
            if above is None:
                above = x.new_zeros(x.shape[0], x.shape[1] + 1)
            h = h + self.above_proj(above.to(dtype))
        c = self.time_mlp(timestep_embedding(t).to(dtype)) + self.cond_proj(z.to(dtype))
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_modulation(c).chunk(2, dim=-1)
        return self.output(self.final_norm(h) * (1 + scale) + shift)  # [R, W]


def above_rows(vectors: Sequence[torch.Tensor | None], width: int, device=None) -> torch.Tensor:
    """The denoiser's `above` input [R, width + 1]: each row's vector and a 1, or zeros and
    a 0 where the row has none (`None`: a cell of the first row)."""
    out = torch.zeros(len(vectors), width + 1, device=device)
    for i, v in enumerate(vectors):
        if v is not None:
            out[i, :width] = v.to(device=device, dtype=out.dtype).flatten()
            out[i, width] = 1.0
    return out


def above_in_sequence(values: torch.Tensor, positions: torch.Tensor, offset: int) -> torch.Tensor:
    """Training's `above` input: vectors `values` [N, W] at increasing flat positions [N]
    -> [N, W + 1], each vector's neighbour `offset` positions earlier when that position
    holds one of `values` too (within the same image), else zeros and a 0."""
    n, width = values.shape
    want = positions - offset
    idx = torch.searchsorted(positions, want).clamp_max(max(n - 1, 0))
    found = positions[idx] == want
    out = values.new_zeros(n, width + 1, dtype=torch.float32)
    out[found, :width] = values[idx[found]].float()
    out[found, width] = 1.0
    return out


# -- shared sampling --------------------------------------------------------------------


def _randn(shape: Sequence[int], generator: torch.Generator | None, device) -> torch.Tensor:
    """Standard normal draw from `generator` on its own device, moved to `device` (fp32)."""
    if generator is None:
        return torch.randn(*shape, device=device)
    return torch.randn(*shape, generator=generator, device=generator.device).to(device)


def guided(
    out_cond: torch.Tensor, out_uncond: torch.Tensor | None, scale: torch.Tensor | None
) -> torch.Tensor:
    """Classifier-free guidance on a prediction (velocity or noise) [R, W]: u + s (c - u).

    scale [R]; rows with scale exactly 1 return the conditional output unchanged, since
    u + (c - u) is not bit-equal to c in floating point.
    """
    if out_uncond is None or scale is None:
        return out_cond
    s = scale.to(out_cond)[:, None]  # s: [R, 1]
    mixed = out_uncond + s * (out_cond - out_uncond)
    return torch.where(s == 1, out_cond, mixed)


class _DenoisingHead(nn.Module):
    """What both heads share: settings per request, per-row noise, the scheduler loop."""

    type_name: ClassVar[str]

    def __init__(self, config: FlowHeadConfig | DiffusionHeadConfig) -> None:
        super().__init__()
        self.config = config
        self.net = AdaLNDenoiser(config.denoiser)

    @property
    def width(self) -> int:
        return self.config.denoiser.width

    @property
    def cond_dim(self) -> int:
        return self.config.denoiser.cond_dim

    @property
    def above(self) -> int:
        """Positions back to the vector that also conditions the net (0: none)."""
        return self.config.denoiser.above

    def spec(self) -> dict[str, Any]:
        """JSON description that `head_from_spec` rebuilds this head from (checkpoints)."""
        return {"type": self.type_name, "config": asdict(self.config)}

    # subclass hooks: a fresh sampling scheduler, and its step
    def _new_scheduler(self):
        raise NotImplementedError

    def _step(self, scheduler, out: torch.Tensor, t: torch.Tensor, x: torch.Tensor):
        return scheduler.step(out, t, x).prev_sample

    @torch.no_grad()
    def sample(
        self,
        hidden: torch.Tensor,
        generators: Sequence[torch.Generator | None],
        requests: Sequence[Any] | None = None,
        settings: Mapping[str, ContinuousSettings] | None = None,
        above: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Conditional sampling (the engine's `ContinuousHead`): hidden [R, D] -> [R, width];
        `above` [R, width + 1] from `above_rows` for a head with `above`.

        Guidance needs unconditional rows, so it goes through `sample_guided`; a request
        that asks for a guidance scale other than 1 is refused here rather than ignored.
        """
        rows = self._resolve(hidden, generators, requests, settings)
        for i, row in enumerate(rows):
            if row.guidance_explicit and row.guidance_scale != 1:
                raise ValueError(
                    f"requests[{i}]: guidance_scale={row.guidance_scale} needs unconditional "
                    "hidden states; call sample_guided"
                )
        return self._sample(hidden, None, None, generators, rows, above)

    @torch.no_grad()
    def sample_guided(
        self,
        hidden_cond: torch.Tensor,
        hidden_uncond: torch.Tensor,
        scale: float | torch.Tensor | None,
        generators: Sequence[torch.Generator | None],
        requests: Sequence[Any] | None = None,
        settings: Mapping[str, ContinuousSettings] | None = None,
        above: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Classifier-free guided sampling: both hidden [R, D] -> vectors [R, width].

        Row i of `hidden_uncond` is the unconditional state of the same request as row i
        of `hidden_cond`; both see the same noise, and every step mixes the predictions as
        u + scale (c - u). `scale`: one float, per-row [R], or None for each request's
        guidance_scale (else the head default). scale 1 equals `sample` exactly. `above`
        (the cell above, generated already) is the same for both rows of a pair.
        """
        if hidden_uncond.shape != hidden_cond.shape:
            raise ValueError(
                f"hidden_uncond shape {tuple(hidden_uncond.shape)} != hidden_cond shape "
                f"{tuple(hidden_cond.shape)}"
            )
        rows = self._resolve(hidden_cond, generators, requests, settings)
        scales = self._scales(scale, rows, hidden_cond.shape[0])  # [R]
        return self._sample(hidden_cond, hidden_uncond, scales, generators, rows, above)

    def _scales(self, scale: float | torch.Tensor | None, rows: list[_Row], n: int) -> torch.Tensor:
        """Guidance scale per row [R] (CPU): the argument, else each row's setting."""
        if scale is None:
            return torch.tensor([r.guidance_scale for r in rows], dtype=torch.float32)
        scales = torch.as_tensor(scale, dtype=torch.float32).flatten().cpu()
        if scales.numel() == 1:
            scales = scales.expand(n)
        if scales.shape != (n,) or not torch.isfinite(scales).all():
            raise ValueError(f"scale must be a finite number or [{n}] values, got {scale!r}")
        return scales

    def _resolve(self, hidden, generators, requests, settings) -> list[_Row]:
        """Check the arguments and settle each row's settings."""
        n = hidden.shape[0]
        if hidden.ndim != 2 or hidden.shape[1] != self.config.denoiser.cond_dim:
            raise ValueError(
                f"hidden must be [R, {self.config.denoiser.cond_dim}], got {tuple(hidden.shape)}"
            )
        if len(generators) != n:
            raise ValueError(f"generators: {len(generators)} given for {n} rows")
        if requests is not None and len(requests) != n:
            raise ValueError(f"requests: {len(requests)} given for {n} rows")
        return [
            _row_settings(self.config, requests[i] if requests else None, settings, i)
            for i in range(n)
        ]

    def _sample(
        self,
        z_c: torch.Tensor,
        z_u: torch.Tensor | None,
        scales: torch.Tensor | None,
        generators: Sequence[torch.Generator | None],
        rows: list[_Row],
        above: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Initial noise per row, then one scheduler loop per distinct step count."""
        n, device = z_c.shape[0], z_c.device
        temps = torch.tensor([r.temperature for r in rows], dtype=torch.float32, device=device)
        noise = [_randn((self.width,), g, device) for g in generators]
        x = torch.stack(noise) * temps[:, None] if n else z_c.new_zeros(0, self.width)  # [R, W]
        out = torch.empty_like(x, dtype=torch.float32)
        for num_steps in sorted({r.num_steps for r in rows}):
            idx = [i for i, r in enumerate(rows) if r.num_steps == num_steps]
            sel = torch.tensor(idx, device=device)
            out[sel] = self._denoise(
                x[sel].float(),
                z_c[sel],
                None if z_u is None else z_u[sel],
                None if scales is None else scales[idx],
                num_steps,
                None if above is None else above[sel],
            )
        return out

    def _denoise(
        self,
        x: torch.Tensor,
        z_c: torch.Tensor,
        z_u: torch.Tensor | None,
        scale: torch.Tensor | None,
        num_steps: int,
        above: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run one fresh scheduler from x [G, W] (noise) to the sample [G, W]."""
        scheduler = self._new_scheduler()
        scheduler.set_timesteps(num_steps)  # CPU schedule: scalar coefficients, no syncs
        if scale is not None and bool((scale == 1).all()):
            z_u = None  # all conditional: skip the unconditional forward
        keep = None if z_u is None else (scale != 1).nonzero().flatten().to(x.device)
        for t in scheduler.timesteps:
            tt = torch.full((x.shape[0],), float(t), device=x.device)  # [G], [0, 1000] scale
            out_c = self.net(x, tt, z_c, above).float()
            out_u = None
            if z_u is not None:
                # only rows that need it; the rest copy out_c (masked off by `guided`)
                out_u = out_c.clone()
                above_u = None if above is None else above[keep]
                out_u[keep] = self.net(x[keep], tt[keep], z_u[keep], above_u).float()
            x = self._step(scheduler, guided(out_c, out_u, scale), t, x)
        return x


class _Row(NamedTuple):
    """One row's settled sampling settings."""

    num_steps: int
    temperature: float
    guidance_scale: float
    guidance_explicit: bool  # set by the request (not the head default)


def _row_settings(config, request, settings, i: int) -> _Row:
    """Settings for one row: the mapping, then request.params, then the head config."""
    chosen: dict[str, Any] = {}
    override = None
    if settings is not None and request is not None:
        override = settings.get(getattr(request, "request_id", None))
    params = getattr(request, "params", None)
    for name in ("num_steps", "temperature", "guidance_scale"):
        value = getattr(override, name, None)
        if value is None:
            value = getattr(params, name, None)
        if value is not None:
            chosen[name] = value
    try:
        resolved = ContinuousSettings(**chosen)
    except ValueError as err:
        raise ValueError(f"requests[{i}]: {err}") from None
    return _Row(
        resolved.num_steps or config.num_steps,
        config.temperature if resolved.temperature is None else resolved.temperature,
        config.guidance_scale if resolved.guidance_scale is None else resolved.guidance_scale,
        resolved.guidance_scale is not None,
    )


# -- the two heads ----------------------------------------------------------------------


class FlowHead(_DenoisingHead):
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

    def loss(
        self,
        z: torch.Tensor,
        x0: torch.Tensor,
        generator: torch.Generator | None = None,
        above: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Flow-matching loss: MSE between predicted and true velocity (noise - x0).

        z [R, D] hidden states, x0 [R, width] targets, above [R, width + 1] -> scalar.
        """
        r, device = x0.shape[0], x0.device
        normal = _randn((r,), generator, device)  # [R]
        sigma = torch.sigmoid(normal * self.config.logit_std + self.config.logit_mean)
        noise = _randn(tuple(x0.shape), generator, device)  # [R, W]
        x_t = self.noisy(x0.float(), noise, sigma)
        pred = self.net(x_t, sigma * NUM_TRAIN_TIMESTEPS, z, above)
        return F.mse_loss(pred.float(), noise - x0.float())


class DiffusionHead(_DenoisingHead):
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

    def loss(
        self,
        z: torch.Tensor,
        x0: torch.Tensor,
        generator: torch.Generator | None = None,
        above: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Denoising loss: MSE on epsilon (or v) at uniformly drawn timesteps -> scalar.

        z [R, D] hidden states, x0 [R, width] targets, above [R, width + 1].
        """
        r, device = x0.shape[0], x0.device
        uniform = torch.rand(r, generator=generator, device=_gen_device(generator, device))
        t = (uniform * NUM_TRAIN_TIMESTEPS).long().clamp_max(NUM_TRAIN_TIMESTEPS - 1).to(device)
        noise = _randn(tuple(x0.shape), generator, device)  # [R, W]
        ddpm, x0 = self.train_scheduler(), x0.float()
        x_t = ddpm.add_noise(x0, noise, t)
        target = noise if self.config.prediction == "epsilon" else ddpm.get_velocity(x0, noise, t)
        pred = self.net(x_t, t.float(), z, above)
        return F.mse_loss(pred.float(), target)


def _gen_device(generator: torch.Generator | None, device) -> torch.device | str:
    return generator.device if generator is not None else device


# -- building and registering -----------------------------------------------------------

HEAD_TYPES: dict[str, tuple[type[nn.Module], type]] = {
    FlowHead.type_name: (FlowHead, FlowHeadConfig),
    DiffusionHead.type_name: (DiffusionHead, DiffusionHeadConfig),
    FrameHead.type_name: (FrameHead, FrameHeadConfig),
}


def head_from_spec(spec: Mapping[str, Any], where: str = "head") -> nn.Module:
    """Rebuild a head (untrained weights) from its `spec()` (a checkpoint's config entry)."""
    if not isinstance(spec, Mapping) or spec.get("type") not in HEAD_TYPES:
        got = spec.get("type") if isinstance(spec, Mapping) else spec
        raise ValueError(f"{where}: type must be one of {sorted(HEAD_TYPES)}, got {got!r}")
    cls, config_cls = HEAD_TYPES[spec["type"]]
    config = spec.get("config")
    if not isinstance(config, Mapping):
        raise ValueError(f"{where}: config must be a dict, got {config!r}")
    try:
        return cls(_from_dict(config_cls, config, "config"))
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def register_head(model: nn.Module, head: nn.Module, name: str | None = None) -> None:
    """`model.add_head(name or head.type_name, head)` after checking the condition width."""
    dim = model.config.dim
    if head.cond_dim != dim:
        raise ValueError(f"the head's cond_dim={head.cond_dim} must equal the model dim {dim}")
    model.add_head(name or head.type_name, head)
