"""Training the streaming audio codec (`CodecTokenizer`) from a TOML recipe.

A recipe (`kind = "codec"`) names the codec's constructor arguments, the data mix, the
loss weights and the optimiser (the same `[optim]` table as model recipes: AdamW, linear
warm-up, cosine decay via `mmntp.train.trainer.lr_at`).

Data (`CodecData`): a pool of espeak-ng sentences in the training voices
(`speech_clips(pool, seed)`, synthesised once and cached on disk) cropped at random and
scaled to a random peak, mixed with tones (`tone_clips` from per-step seeds; the held-out
tone seed of `mmntp.eval.audio_tokenizers` is never drawn) in the fraction `tones`.
Losses: multi-scale log-mel L1 (`mmntp.eval.audio.mel_spectrogram`, one STFT size per
entry of `mel_ffts`, hop n_fft / 4, log floor `mel_eps`), waveform L1, relative waveform MSE, and the RVQ's codebook + commitment
losses; no adversarial or feature-matching terms. Every `restart_every` steps each RVQ
level re-initialises its dead codes. Batches and initial weights depend on `seed` only,
so a run is deterministic for a given recipe and step count. At the end the held-out
figures are measured (`mmntp.eval.audio_tokenizers`) and the card folder is written with
the recipe beside it.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mmntp.data.audio import TRAIN_VOICES, random_crop, speech_clips, tone_clips
from mmntp.eval.audio import mel_spectrogram
from mmntp.eval.audio_tokenizers import HELDOUT_TONE_SEED
from mmntp.train.recipe import OptimSection
from mmntp.train.tokenizer_recipe import TokenizerRecipe, parse_sections
from mmntp.train.toml_fields import number, read_toml
from mmntp.train.trainer import lr_at

KIND = "codec"


@dataclass
class CodecData:
    """Speech crops from a synthesised pool plus tones; `crop_seconds` is rounded to frames."""

    pool: int = 300  # espeak-ng sentences synthesised once (training voices only)
    tones: float = 0.3  # fraction of each batch that is a tone
    crop_seconds: float = 0.64
    min_peak: float = 0.3  # speech crops are scaled to a peak uniform in [min_peak, max_peak]
    max_peak: float = 0.95

    def __post_init__(self) -> None:
        self.pool = number("data.pool", self.pool, integer=True, gt=0)
        self.tones = number("data.tones", self.tones, ge=0, le=1)
        self.crop_seconds = number("data.crop_seconds", self.crop_seconds, gt=0)
        self.min_peak = number("data.min_peak", self.min_peak, gt=0, le=1)
        self.max_peak = number("data.max_peak", self.max_peak, gt=0, le=1)
        if self.min_peak > self.max_peak:
            raise ValueError("data.min_peak must not exceed data.max_peak")
        self._clips: list[np.ndarray] | None = None
        self._seed = 0

    def prepare(self, seed: int) -> None:
        """Synthesises (or loads from the cache) the speech pool for `seed`."""
        if self._clips is None or self._seed != seed:
            self._clips = [c for c, _, _ in speech_clips(self.pool, seed, TRAIN_VOICES)]
            self._seed = seed

    def batch(self, step: int, batch_size: int, hop: int, sample_rate: int) -> torch.Tensor:
        """Batch `step`: waveforms [B, T], T = crop_seconds rounded to whole frames."""
        if self._clips is None:
            raise RuntimeError("CodecData.prepare(seed) first")
        length = max(1, round(self.crop_seconds * sample_rate / hop)) * hop
        rng = np.random.default_rng([self._seed, step])
        out = np.zeros((batch_size, length), dtype=np.float32)
        for i in range(batch_size):
            if rng.random() < self.tones:
                seed = int(rng.integers(2**31))
                seed += seed == HELDOUT_TONE_SEED
                seconds = max(1.0, length / sample_rate + 0.05)
                clip = tone_clips(1, seed, seconds, sample_rate)[0][0]
                out[i] = random_crop(clip, length, rng)
            else:
                clip = self._clips[int(rng.integers(len(self._clips)))]
                crop = random_crop(clip, length, rng)
                peak = float(np.abs(crop).max())
                if peak > 1e-3:
                    crop = crop * (rng.uniform(self.min_peak, self.max_peak) / peak)
                out[i] = crop
        return torch.from_numpy(out)


@dataclass
class CodecLoss:
    """Loss weights; `mel` multiplies the mean over STFT sizes of the log-mel L1,
    `waveform` the waveform L1, `waveform_mse` the relative squared error
    ||y - x||^2 / ||x||^2 over the batch (10^(-SNR/10)).

    Why the squared error: on speech crops a codec trained on the waveform L1 learned to
    output silence (L1's optimum under phase uncertainty is the median, 0; its gradient
    is a sign), and stayed at 0 dB SNR, as did the card of 2026-12-02 after 10,000 steps
    with L1 at weight 5; the relative MSE left 0 dB within a few hundred steps (no VQ: 5.5 dB
    at 2,000)."""

    mel: float = 1.0
    mel_ffts: list[int] = field(default_factory=lambda: [256, 512, 1024, 2048])
    mel_eps: float = 1e-2  # log floor: the default 1e-5 lets near-silent bands dominate
    waveform: float = 5.0
    waveform_mse: float = 0.0
    codebook: float = 1.0  # weight of codebook + commitment (beta is the tokenizer's)
    restart_every: int = 25  # dead-code restart interval in steps (0 = never)

    def __post_init__(self) -> None:
        self.mel_eps = number("loss.mel_eps", self.mel_eps, gt=0)
        for name in ("mel", "waveform", "waveform_mse", "codebook"):
            setattr(self, name, number(f"loss.{name}", getattr(self, name), ge=0))
        if not isinstance(self.mel_ffts, (list, tuple)) or not self.mel_ffts:
            raise ValueError(f"loss.mel_ffts must be a list of STFT sizes, got {self.mel_ffts!r}")
        self.mel_ffts = [
            number(f"loss.mel_ffts[{i}]", n, integer=True, ge=16)
            for i, n in enumerate(self.mel_ffts)
        ]
        self.restart_every = number("loss.restart_every", self.restart_every, integer=True, ge=0)


def mel_bands(n_fft: int) -> int:
    """Mel bands for an STFT size: 80 at 1024, fewer for short windows, more for long."""
    return {256: 32, 512: 64, 1024: 80, 2048: 128}.get(n_fft, max(16, min(128, n_fft // 12)))


@dataclass
class CodecRecipe(TokenizerRecipe):
    """One codec training run; `out_dir` is relative to the recipe file's folder."""

    name: str
    kind: str = KIND
    seed: int = 0
    out_dir: str = "."
    batch_size: int = 8
    threads: int = 1  # 0 = leave torch's default
    tokenizer: dict[str, Any] = field(default_factory=dict)
    data: CodecData = field(default_factory=CodecData)
    loss: CodecLoss = field(default_factory=CodecLoss)
    optim: OptimSection = field(default_factory=OptimSection)
    path: Path | None = None

    def __post_init__(self) -> None:
        self.check_common((KIND,))


def parse_codec_recipe(table: dict[str, Any], path: Path | None = None) -> CodecRecipe:
    """A parsed TOML table -> recipe; unknown keys are errors that name them."""
    sections = {"data": CodecData, "loss": CodecLoss, "optim": OptimSection}
    return parse_sections(CodecRecipe, table, sections, path)


def load_codec_recipe(path: str | Path) -> CodecRecipe:
    """Reads and validates a codec recipe TOML file."""
    table, resolved = read_toml(path)
    return parse_codec_recipe(table, resolved)


def build_codec(recipe: CodecRecipe) -> Any:
    from mmntp.tokenizers.audio_codec import CodecTokenizer

    try:
        return CodecTokenizer(**recipe.tokenizer, seed=recipe.seed)
    except TypeError as err:
        raise ValueError(f"tokenizer: {err}") from None


# -- losses and the loop -----------------------------------------------------------------


def reconstruction_loss(
    recon: torch.Tensor, target: torch.Tensor, weights: CodecLoss, sample_rate: int
) -> tuple[torch.Tensor, dict[str, float]]:
    """Multi-scale log-mel L1 + waveform L1 + relative waveform MSE; inputs [B, T]."""
    mel = sum(
        (
            mel_spectrogram(recon, n, n // 4, mel_bands(n), sample_rate, weights.mel_eps)
            - mel_spectrogram(target, n, n // 4, mel_bands(n), sample_rate, weights.mel_eps)
        )
        .abs()
        .mean()
        for n in weights.mel_ffts
    ) / len(weights.mel_ffts)
    wave = (recon - target).abs().mean()
    mse = ((recon - target) ** 2).sum() / (target**2).sum().clamp(min=1e-8)
    total = weights.mel * mel + weights.waveform * wave + weights.waveform_mse * mse
    return total, {"mel": mel.item(), "wave": wave.item(), "rel_mse": mse.item()}


@dataclass
class CodecTrainResult:
    """What a run did: steps, wall time, losses and the held-out report."""

    steps: int
    wall_s: float
    losses: list[float]
    report: dict[str, Any]
    out_dir: Path | None
    restarted_codes: int = 0
    final: dict[str, float] = field(default_factory=dict)  # last step's logged figures


def _optimizer(model: torch.nn.Module, optim: OptimSection) -> torch.optim.AdamW:
    """AdamW; conv kernels and linear weights decay, biases and codebooks do not."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2 or "embedding" in n]
    groups = [
        {"params": decay, "weight_decay": optim.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps)


def fit(
    tok: Any, recipe: CodecRecipe, max_steps: int, progress: bool = True
) -> tuple[list[float], int, dict[str, float]]:
    """Trains `tok.model` in place; returns (losses, restarted codes, last logs)."""
    model, optim = tok.model.train(), recipe.optim
    opt = _optimizer(model, optim)
    restart_gen = torch.Generator().manual_seed(recipe.seed)
    recipe.data.prepare(recipe.seed)
    with torch.no_grad():  # codes start on the encoder's outputs (no collapse)
        warm = [
            recipe.data.batch(10_000_000 + i, recipe.batch_size, tok.hop, tok.sample_rate)
            for i in range(4)
        ]
        model.quantizer.init_from_data(model.encoder(torch.cat(warm)), restart_gen)
    losses, restarted, logs = [], 0, {}
    bar = tqdm(range(max_steps), desc=recipe.name, unit="step", disable=not progress)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, optim)
        x = recipe.data.batch(step, recipe.batch_size, tok.hop, tok.sample_rate)
        recon, q = model(x)
        rec, logs = reconstruction_loss(recon, x, recipe.loss, tok.sample_rate)
        loss = rec + recipe.loss.codebook * q.loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
        opt.step()
        losses.append(loss.item())
        every = recipe.loss.restart_every
        if every and (step + 1) % every == 0 and step + 1 < max_steps:
            for level in model.quantizer.levels:
                restarted += level.restart_dead_codes(generator=restart_gen)
        logs = {**logs, "vq": q.loss.item(), "ppl0": q.perplexity[0].item()}
        bar.set_postfix({"loss": f"{losses[-1]:.4f}", **{k: f"{v:.3g}" for k, v in logs.items()}})
    model.eval()
    return losses, restarted, logs


def train_codec(
    recipe: CodecRecipe | str | Path,
    out_dir: str | Path | None = None,
    max_steps: int | None = None,
    progress: bool = True,
    write: bool = True,
    evaluate: bool = True,
) -> tuple[Any, CodecTrainResult]:
    """Trains, measures and (if `write`) saves the card folder -> (tokenizer, result).

    `max_steps` overrides the recipe's optim.max_steps (the schedule follows it).
    """
    from mmntp.eval.audio_tokenizers import evaluate_audio_tokenizer

    if not isinstance(recipe, CodecRecipe):
        recipe = load_codec_recipe(recipe)
    if max_steps is not None:
        optim = recipe.optim
        recipe.optim = OptimSection(
            lr=optim.lr,
            min_lr_ratio=optim.min_lr_ratio,
            weight_decay=optim.weight_decay,
            betas=optim.betas,
            eps=optim.eps,
            warmup_steps=min(optim.warmup_steps, max_steps),
            max_steps=max_steps,
            grad_clip=optim.grad_clip,
        )
    steps = recipe.optim.max_steps
    threads = torch.get_num_threads()
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    try:
        tok = build_codec(recipe)
        began = time.perf_counter()
        with torch.random.fork_rng():
            torch.manual_seed(recipe.seed)
            losses, restarted, logs = fit(tok, recipe, steps, progress)
        wall_s = time.perf_counter() - began
        report = evaluate_audio_tokenizer(tok) if evaluate else {}
    finally:
        torch.set_num_threads(threads)
    result = CodecTrainResult(steps, wall_s, losses, report, None, restarted, logs)
    if write:
        directory = Path(out_dir).resolve() if out_dir is not None else recipe.output_dir()
        write_card(tok, recipe, result, directory)
        result.out_dir = directory
    return tok, result


def write_card(tok: Any, recipe: CodecRecipe, result: CodecTrainResult, directory: Path) -> None:
    """Saves the tokenizer with its CARD.md and copies the recipe beside it."""
    tok.save(directory, card=render_card(tok, recipe, result))
    if recipe.path is not None and recipe.path.resolve() != (directory / "recipe.toml").resolve():
        shutil.copyfile(recipe.path, directory / "recipe.toml")
    print(f"wrote {directory}", file=sys.stderr)


def render_card(tok: Any, recipe: CodecRecipe, result: CodecTrainResult) -> str:
    """CARD.md: architecture, size, bitrate, data, training run and held-out figures."""
    from mmntp.eval.audio_tokenizers import bitrate, format_figures

    name = recipe.output_dir().name if recipe.path is not None else recipe.name
    mix, loss, optim = recipe.data, recipe.loss, recipe.optim
    frames = max(1, round(mix.crop_seconds * tok.sample_rate / tok.hop))
    crop_s = frames * tok.hop / tok.sample_rate
    size_mb = 4 * sum(t.numel() for t in tok.tensors().values()) / 1e6
    rates = [tok.sample_rate // tok.patch]
    for s in tok.strides:
        rates.append(rates[-1] // s)
    lines = [
        f"# {name}",
        "",
        f"`CodecTokenizer` (type `{tok.type_name}`): a streaming neural audio codec, "
        f"{tok.sample_rate // 1000} kHz mono <-> codes (frames, {tok.num_codebooks}) at "
        f"{tok.frame_rate:g} frames per second (hop {tok.hop}), {tok.num_codebooks} residual "
        f"VQ levels of {tok.codebook_size} codes: {bitrate(tok):.0f} bit/s.",
        "",
        "## Architecture",
        "",
        f"- Causal SEANet-lite encoder: the waveform folded into {tok.patch}-sample columns "
        f"({rates[0]} Hz), a causal k7 conv, then per stage {tok.res_units} residual units "
        "(ELU, causal dilated k3 conv to half width, dilations "
        f"{[3**j for j in range(tok.res_units)]}, ELU, 1x1, skip) and a strided causal conv "
        f"(kernel 2 x stride); stage widths {tok.channels}, strides {tok.strides} "
        f"(column rates {rates} Hz), a causal k3 conv to a {tok.latent_dim}-d latent.",
        "- Decoder: the mirror image, causal sub-pixel upsampling (causal k3 conv to "
        "width x stride, depth-to-space), a last causal k7 conv to "
        f"{tok.patch} samples per column, tanh. Every decoder conv has stride 1 and only "
        "left context, so the stream decoder carries each conv's input tail and one frame "
        f"of codes yields exactly {tok.hop} new samples, equal to the one-shot decode.",
        f"- Residual VQ: {tok.num_codebooks} levels x {tok.codebook_size} codes; each level "
        f"projects the residual to {tok.code_dim} dimensions and picks the nearest code "
        "by cosine; the code's own vector, its learned norm kept, is projected back and "
        "subtracted (factorised codes, DAC style), "
        f"straight-through estimator, codebook loss + {tok.beta:g} x commitment loss, "
        "usage tracking and dead-code restarts from recent projected residuals.",
        f"- {tok.num_parameters():,} parameters ({size_mb:.1f} MB float32 in "
        "`tokenizer.safetensors`).",
        "",
        "## Training",
        "",
        f"- Recipe: `recipe.toml` (`mmntp train-tokenizer tokenizers/{name}/recipe.toml`; "
        "or `mmntp.train.audio_codec.train_codec`).",
        f"- Data: {crop_s:.2f} s random crops; {1 - mix.tones:.0%} speech from a pool of "
        f"{mix.pool} espeak-ng sentences in the training voices ({', '.join(TRAIN_VOICES)}; "
        f"random speed and pitch, `speech_clips({mix.pool}, seed={recipe.seed})`), each crop "
        f"scaled to a random peak in [{mix.min_peak:g}, {mix.max_peak:g}]; {mix.tones:.0%} "
        "tones (`tone_clips`: sine / square / sawtooth, 110-880 Hz, per-step seeds). The "
        "held-out voices and the held-out tone seed are never trained on.",
        f"- {result.steps} steps of batch {recipe.batch_size} "
        f"({result.steps * recipe.batch_size * crop_s / 3600:.1f} h of audio seen), AdamW lr "
        f"{optim.lr:g} (warm-up {optim.warmup_steps}, cosine to {optim.min_lr_ratio:g}x), "
        f"weight decay {optim.weight_decay:g}, grad clip {optim.grad_clip:g}, seed {recipe.seed}.",
        f"- Losses: {loss.mel:g} x multi-scale log-mel L1 (mean over STFT sizes "
        f"{loss.mel_ffts}, hop n_fft / 4, log floor {loss.mel_eps:g}) + {loss.waveform:g} x "
        f"waveform L1 + {loss.waveform_mse:g} x relative waveform MSE (||y - x||^2 / ||x||^2) + "
        f"{loss.codebook:g} x (codebook + commitment). No adversarial, feature-matching or "
        "perceptual terms. "
        f"Dead codes restarted every {loss.restart_every} steps "
        f"({result.restarted_codes} restarts in all).",
        f"- Wall time: {result.wall_s / 60:.1f} min on {recipe.threads or 'all'} thread(s) of "
        f"this project's machine (2 shared CPU cores, torch {torch.__version__}); final "
        f"training loss {result.losses[-1]:.4f} (mel {result.final.get('mel', float('nan')):.3f}, "
        f"waveform L1 {result.final.get('wave', float('nan')):.4f}, relative MSE "
        f"{result.final.get('rel_mse', float('nan')):.3f}).",
        "",
        "## Held-out quality and speed",
        "",
        "Speech: `heldout_speech()` (24 sentences in the held-out voices "
        "en+f4, en-gb-x-gbclan+m4, en-us+f5). SI-SNR in dB and log-mel distance (80 bands, "
        "1024-point STFT, natural log; `mmntp.eval.audio`) per clip. Tones: "
        f"`tone_clips(200, seed={HELDOUT_TONE_SEED})`, pitch of the round trip by "
        "autocorrelation (`estimate_pitch`) within one semitone. Usage: the fraction of each "
        "level's codes used over all those clips. Real-time factor: compute seconds per "
        "second of audio (one-shot encode / decode of the held-out speech).",
        "",
        format_figures(result.report) if result.report else "(not measured)",
        "",
        f"Regenerate the figures: `python -m mmntp.eval.audio_tokenizers tokenizers/{name}` "
        "(speeds depend on the machine and its load).",
    ]
    return "\n".join(lines) + "\n"
