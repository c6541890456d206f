"""Training the image tokenizers (VQ and KL) from a TOML recipe: `mmntp train-tokenizer`.

A recipe names the tokenizer kind ("vq" or "kl"), its constructor arguments, the data
mixture (`mmntp.data.images.ImageMixture`), the loss weights and the optimiser (the same
`[optim]` table as model recipes: AdamW, linear warm-up, cosine decay). Losses:
L1 + L2 reconstruction + an L1 on image gradients (a cheap, perceptual-free edge term),
plus the quantizer's codebook and commitment losses (VQ) or a small KL (KL). Every
`restart_every` steps the VQ quantizer re-initialises dead codes from recent encoder
outputs. Batches and initial weights depend on `seed` only, so a run is deterministic
for a given recipe and step count. At the end the KL latents' shift and scale are
measured on training batches, the held-out figures are computed
(`mmntp.eval.images`), and the card folder is written with the recipe beside it.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from mmntp.data.images import ImageMixture
from mmntp.train.recipe import OptimSection
from mmntp.train.tokenizer_recipe import TokenizerRecipe, parse_sections
from mmntp.train.toml_fields import number, read_toml
from mmntp.train.trainer import lr_at

KINDS = ("vq", "kl")


@dataclass
class LossSection:
    """Loss weights; `kl` multiplies the per-image KL divided by the pixel-value count."""

    l1: float = 1.0
    l2: float = 1.0
    grad: float = 0.5
    codebook: float = 1.0  # VQ: weight of codebook + commitment (beta is the tokenizer's)
    kl: float = 1e-5
    restart_every: int = 100  # VQ: dead-code restart interval in steps (0 = never)

    def __post_init__(self) -> None:
        for name in ("l1", "l2", "grad", "codebook", "kl"):
            setattr(self, name, number(f"loss.{name}", getattr(self, name), ge=0))
        self.restart_every = number("loss.restart_every", self.restart_every, integer=True, ge=0)


@dataclass
class ImageTokenizerRecipe(TokenizerRecipe):
    """One tokenizer training run; `out_dir` is relative to the recipe file's folder."""

    name: str
    kind: str
    seed: int = 0
    out_dir: str = "."
    batch_size: int = 64
    threads: int = 0  # 0 = leave torch's default
    tokenizer: dict[str, Any] = field(default_factory=dict)
    data: ImageMixture = field(default_factory=ImageMixture)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    path: Path | None = None  # the TOML file it came from

    def __post_init__(self) -> None:
        self.check_common(KINDS)


def parse_recipe(table: dict[str, Any], path: Path | None = None) -> ImageTokenizerRecipe:
    """A parsed TOML table -> recipe; unknown keys are errors that name them."""
    sections = {"data": ImageMixture, "loss": LossSection, "optim": OptimSection}
    return parse_sections(ImageTokenizerRecipe, table, sections, path)


def load_image_recipe(path: str | Path) -> ImageTokenizerRecipe:
    """Reads and validates a tokenizer recipe TOML file."""
    table, resolved = read_toml(path)
    return parse_recipe(table, resolved)


def build_tokenizer(recipe: ImageTokenizerRecipe) -> Any:
    """A fresh (untrained) tokenizer of the recipe's kind, seeded by the recipe."""
    from mmntp.tokenizers.image import VQImageTokenizer

    args = {**recipe.tokenizer, "seed": recipe.seed, "image_size": recipe.data.size}
    try:
        if recipe.kind == "vq":
            return VQImageTokenizer(**args)
        from mmntp.tokenizers.image_kl import KLImageTokenizer

        return KLImageTokenizer(**args)
    except TypeError as err:
        raise ValueError(f"tokenizer: {err}") from None


# -- losses ----------------------------------------------------------------------------


def reconstruction_loss(
    recon: torch.Tensor, target: torch.Tensor, weights: LossSection
) -> torch.Tensor:
    """L1 + L2 + L1 of the horizontal and vertical image differences; inputs [B, 3, H, W]."""
    loss = weights.l1 * (recon - target).abs().mean() + weights.l2 * F.mse_loss(recon, target)
    if weights.grad:
        edges = sum((a - b).abs().mean() for a, b in zip(_differences(recon), _differences(target)))
        loss = loss + weights.grad * edges
    return loss


def _differences(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal [B, C, H, W-1] and vertical [B, C, H-1, W] neighbour differences."""
    return t[..., :, 1:] - t[..., :, :-1], t[..., 1:, :] - t[..., :-1, :]


def vq_step(tok: Any, x: torch.Tensor, weights: LossSection) -> tuple[torch.Tensor, dict]:
    """One VQ forward: x [B, 3, S, S] in [0, 1] -> (loss, logged figures)."""
    target = x * 2 - 1  # the autoencoder works in [-1, 1]
    recon, q = tok.model(target)
    rec = reconstruction_loss(recon, target, weights)
    loss = rec + weights.codebook * q.loss
    return loss, {"rec": rec.item(), "ppl": q.perplexity.item()}


def kl_step(tok: Any, x: torch.Tensor, weights: LossSection) -> tuple[torch.Tensor, dict]:
    """One KL-autoencoder forward: posterior sample -> decode; loss = rec + w * KL."""
    target = x * 2 - 1
    posterior = tok.model.encode(target).latent_dist
    recon = tok.model.decode(posterior.sample()).sample  # [B, 3, S, S]
    rec = reconstruction_loss(recon, target, weights)
    kl = posterior.kl().mean() / target[0].numel()  # per image, per pixel value
    return rec + weights.kl * kl, {"rec": rec.item(), "kl": kl.item()}


# -- the loop ----------------------------------------------------------------------------


@dataclass
class ImageTrainResult:
    """What a run did: steps, wall time, final losses and the held-out report."""

    steps: int
    wall_s: float
    losses: list[float]
    report: dict[str, Any]
    out_dir: Path | None
    restarted_codes: int = 0


def _optimizer(model: torch.nn.Module, optim: OptimSection) -> torch.optim.AdamW:
    """AdamW; convolution kernels decay, norms, biases and the codebook do not."""
    decay = [p for p in model.parameters() if p.ndim == 4]
    rest = [p for p in model.parameters() if p.ndim != 4]
    groups = [
        {"params": decay, "weight_decay": optim.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps)


def fit(tok: Any, recipe: ImageTokenizerRecipe, progress: bool = True) -> tuple[list[float], int]:
    """Trains `tok.model` in place for recipe.optim.max_steps; returns (losses, restarts)."""
    model, optim = tok.model.train(), recipe.optim
    opt = _optimizer(model, optim)
    step_fn = vq_step if recipe.kind == "vq" else kl_step
    restart_gen = torch.Generator().manual_seed(recipe.seed)
    losses, restarted = [], 0
    bar = tqdm(range(optim.max_steps), desc=recipe.name, unit="step", disable=not progress)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, optim)
        loss, logs = step_fn(tok, recipe.data.batch(step, recipe.batch_size), recipe.loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
        opt.step()
        losses.append(loss.item())
        every = recipe.loss.restart_every
        if recipe.kind == "vq" and every and (step + 1) % every == 0 and step + 1 < optim.max_steps:
            restarted += model.quantizer.restart_dead_codes(generator=restart_gen)
        bar.set_postfix({"loss": f"{losses[-1]:.4f}", **{k: f"{v:.3g}" for k, v in logs.items()}})
    model.eval()
    return losses, restarted


@torch.no_grad()
def measure_latent_stats(tok: Any, mixture: ImageMixture, batches: int = 16) -> tuple[float, float]:
    """(mean, 1 / std) of the KL posterior means over training batches (never held-out data)."""
    zs = []
    for i in range(batches):
        x = mixture.batch(10_000_000 + i, 64)  # steps no training run reaches
        zs.append(tok.model.encode(x * 2 - 1).latent_dist.mean.flatten())
    z = torch.cat(zs)
    return float(z.mean()), float(1.0 / z.std())


def train_image_tokenizer(
    recipe: ImageTokenizerRecipe,
    *,
    out_dir: str | Path | None = None,
    progress: bool = True,
    write: bool = True,
    eval_limit: int | None = None,
) -> tuple[Any, ImageTrainResult]:
    """Trains, measures and (if `write`) saves the card folder -> (tokenizer, result).

    `eval_limit` evaluates on the first images of each held-out set only (tests).
    """
    from mmntp.eval.images import evaluate_image_tokenizer

    threads = torch.get_num_threads()
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    try:
        tok = build_tokenizer(recipe)
        began = time.perf_counter()
        with torch.random.fork_rng():
            torch.manual_seed(recipe.seed)  # posterior samples draw from the global RNG
            losses, restarted = fit(tok, recipe, progress)
        if recipe.kind == "kl":
            tok.shift_factor, scale = measure_latent_stats(tok, recipe.data)
            tok.scaling_factor = scale
        wall_s = time.perf_counter() - began
        report = evaluate_image_tokenizer(tok, limit=eval_limit)
    finally:
        torch.set_num_threads(threads)
    directory = Path(out_dir).resolve() if out_dir is not None else recipe.output_dir()
    result = ImageTrainResult(recipe.optim.max_steps, wall_s, losses, report, None, restarted)
    if write:
        write_card(tok, recipe, result, directory)
        result.out_dir = directory
    return tok, result


def write_card(tok: Any, recipe: ImageTokenizerRecipe, result: ImageTrainResult, directory: Path):
    """Saves the tokenizer with its CARD.md and copies the recipe beside it."""
    tok.save(directory, card=render_card(tok, recipe, result))
    if recipe.path is not None and recipe.path.resolve() != (directory / "recipe.toml").resolve():
        shutil.copyfile(recipe.path, directory / "recipe.toml")
    print(f"wrote {directory}", file=sys.stderr)


def render_card(tok: Any, recipe: ImageTokenizerRecipe, result: ImageTrainResult) -> str:
    """CARD.md: architecture, size, data, training run and held-out figures."""
    from mmntp.eval.images import format_figures

    name = recipe.output_dir().name if recipe.path is not None else recipe.name
    mix = recipe.data
    lines = [
        f"# {name}",
        "",
        *_architecture_lines(tok),
        "",
        "## Training",
        "",
        f"- Recipe: `recipe.toml` (`mmntp train-tokenizer tokenizers/{name}/recipe.toml`).",
        f"- Data: {mix.size}x{mix.size} RGB, mixture photos {mix.photos:g} / shapes "
        f"{mix.shapes:g} / digits {mix.digits:g}. Photos: random square crops (side "
        "log-uniform from 32 px to the short side, resized, random flips) of the photos "
        "bundled with scikit-image and scikit-learn, except `chelsea`; shapes: procedural "
        "'a {color} {shape} on a {background} background'; digits: scikit-learn "
        "`load_digits` [0, 1500) upscaled (`mmntp/data/images.py`).",
        f"- {result.steps} steps of batch {recipe.batch_size} ({result.steps * recipe.batch_size:,}"
        f" images), AdamW lr {recipe.optim.lr:g} (warm-up {recipe.optim.warmup_steps}, cosine "
        f"to {recipe.optim.min_lr_ratio:g}x), seed {recipe.seed}.",
        f"- Losses: L1 {recipe.loss.l1:g} + L2 {recipe.loss.l2:g} + image-gradient L1 "
        f"{recipe.loss.grad:g}" + _loss_suffix(recipe, result) + ".",
        f"- Wall time: {result.wall_s / 60:.1f} min on this project's machine (2 shared CPU "
        f"cores, torch {torch.__version__}); final training loss {result.losses[-1]:.4f}.",
        "",
        "## Held-out quality",
        "",
        "Photos: 256 fixed crops of scikit-image's `chelsea` (never trained on); shapes: "
        "256 from a held-out seed; digits: scikit-learn digits [1500, 1797). PSNR and SSIM "
        "(scikit-image, Gaussian window sigma 1.5) are per-image means.",
        "",
        format_figures(result.report),
        "",
        f"Regenerate the figures: `python -m mmntp.eval.images tokenizers/{name}`.",
    ]
    return "\n".join(lines) + "\n"


def _architecture_lines(tok: Any) -> list[str]:
    grid = f"{tok.grid[0]}x{tok.grid[1]}"
    params = f"{tok.num_parameters():,} parameters"
    if tok.kind == "discrete":
        return [
            f"`VQImageTokenizer` (type `{tok.type_name}`): a {tok.image_size}x{tok.image_size} "
            f"RGB image <-> {tok.num_tokens} codes ({grid} grid, raster order) from one "
            f"codebook of {tok.codebook_size}.",
            "",
            f"- Convolutional encoder / decoder, stage widths {tok.channels}, "
            f"{tok.num_res_blocks} ResNet block(s) per stage, patch {tok.patch}; {params} "
            "(float32 in `tokenizer.safetensors`).",
            f"- LlamaGen-style quantizer: {tok.codebook_size} codes of dimension "
            f"{tok.code_dim}, codes and encoder outputs l2-normalised, nearest code by "
            f"cosine, straight-through estimator, codebook loss + {tok.beta:g} x commitment "
            "loss, dead-code restarts from recent encoder outputs.",
        ]
    return [
        f"`KLImageTokenizer` (type `{tok.type_name}`): a {tok.image_size}x{tok.image_size} "
        f"RGB image <-> {tok.num_tokens} latents of dimension {tok.latent_dim} ({grid} grid, "
        "raster order).",
        "",
        f"- diffusers `AutoencoderKL`, block_out_channels {tok.block_out_channels}, "
        f"layers_per_block {tok.layers_per_block}, latent_channels {tok.latent_dim}; "
        f"{params} (float32 in `tokenizer.safetensors`).",
        "- Latents are the posterior mean normalised as (z - shift_factor) x scaling_factor "
        f"with shift_factor {tok.shift_factor:.4f} and scaling_factor {tok.scaling_factor:.4f}"
        " (the mean and 1/std of the posterior means over training batches), so flow / "
        "diffusion heads see zero-mean, unit-variance latents.",
    ]


def _loss_suffix(recipe: ImageTokenizerRecipe, result: ImageTrainResult) -> str:
    if recipe.kind == "vq":
        return (
            f" + {recipe.loss.codebook:g} x (codebook + commitment); dead codes restarted "
            f"every {recipe.loss.restart_every} steps ({result.restarted_codes} codes restarted "
            "in all)"
        )
    return f" + KL {recipe.loss.kl:g} (per image, divided by the pixel-value count)"
