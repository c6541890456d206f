"""What the flow and diffusion heads share: per-request settings, per-row noise, and the
scheduler loop over the denoiser (`DenoisingHead`); each family adds its scheduler.

Both heads read the transformer's hidden state z [R, D] at a continuous position and turn
seeded noise into a vector [R, width], as MAR's diffusion loss does.

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
`request.params` (`SamplingParams`), then the head's config (num_steps, temperature);
a guidance scale set nowhere is no guidance (`guidance.guidance_scale`). Guidance mixes
the predictions through `mmntp.model.guidance.guided`; the loop knows nothing else of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mmntp.model.guidance import guidance_scale, guided
from mmntp.model.heads.base import StepOutput, StepRows, continuous_step
from mmntp.model.heads.config import NUM_TRAIN_TIMESTEPS, ContinuousSettings
from mmntp.model.heads.denoiser import AdaLNDenoiser

__all__ = ["NUM_TRAIN_TIMESTEPS", "DenoisingHead", "randn"]


def randn(shape: Sequence[int], generator: torch.Generator | None, device) -> torch.Tensor:
    """Standard normal draw from `generator` on its own device, moved to `device` (fp32)."""
    if generator is None:
        return torch.randn(*shape, device=device)
    return torch.randn(*shape, generator=generator, device=generator.device).to(device)


class DenoisingHead(nn.Module):
    """What both heads share: settings per request, per-row noise, the scheduler loop."""

    type_name: ClassVar[str]

    def __init__(self, config: Any) -> None:
        """config: a FlowHeadConfig or DiffusionHeadConfig (.denoiser, .num_steps,
        .temperature)."""
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

    def step(self, rows: StepRows) -> StepOutput:
        """The engine's per-step call (`OutputHead`): the rows' vectors."""
        return continuous_step(self, rows)

    def loss(
        self,
        z: torch.Tensor,
        x0: torch.Tensor,
        generator: torch.Generator | None = None,
        above: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Training loss: MSE between the net's prediction and the family's target (flow:
        the velocity; diffusion: epsilon or v) at a randomly drawn noise level -> scalar.

        z [R, D] hidden states, x0 [R, width] targets, above [R, width + 1].
        """
        x_t, t, target = self._training_pair(x0, generator)
        pred = self.net(x_t, t, z, above)
        return F.mse_loss(pred.float(), target)

    # subclass hooks: the training pair (noised x0 [R, W], net time [R] on the [0, 1000]
    # scale, target [R, W]), a fresh sampling scheduler, and its step
    def _training_pair(self, x0: torch.Tensor, generator: torch.Generator | None):
        raise NotImplementedError

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
        guidance_scale (else 1: no guidance). scale 1 equals `sample` exactly. `above`
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
        noise = [randn((self.width,), g, device) for g in generators]
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
    guidance_explicit: bool  # set by the request (None there: no guidance)


def _row_settings(config, request, settings, i: int) -> _Row:
    """Settings for one row: the mapping, then request.params, then the head config
    (steps and temperature; guidance has no head default)."""
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
        guidance_scale(resolved.guidance_scale),
        resolved.guidance_scale is not None,
    )
