"""Training the cochlear audio tokenizer from a TOML recipe (`kind = "cochlear"`).

Two stages, deterministic from the recipe's seed:

1. the codebook: k-means (Euclidean, random distinct frames as the start, empty clusters
   re-seeded from random frames) on cochleagram frames of the training pool;
2. the decoder: the training clips are encoded once with that codebook; each step takes
   random crops (`context_frames` of lead-in whose output is not scored, then
   `crop_frames` scored), decodes their codes and minimises a multi-scale log-mel L1
   (`mmntp.eval.audio.mel_spectrogram`) plus an L1 between the cochleagrams of the
   decoded and the original crop. AdamW, linear warm-up then cosine (`lr_at`).

The pool: `speech_clips` espeak-ng sentences from TRAIN_VOICES (cached on disk after the
first synthesis) and `tone_clips`; a crop is a tone with probability `tone_fraction`.
The held-out voices and tones (`mmntp.eval.cochlear`) are never trained on.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mmntp.train.cochlear_card import render_card
from mmntp.train.recipe import OptimSection
from mmntp.train.tokenizer_recipe import TokenizerRecipe, parse_sections
from mmntp.train.toml_fields import number, read_toml, string
from mmntp.train.trainer import lr_at


@dataclass
class CochlearData:
    """The training pool: espeak-ng speech (TRAIN_VOICES) and tones."""

    speech_clips: int = 320
    speech_seed: int = 1
    tone_clips: int = 120
    tone_seed: int = 2
    tone_seconds: float = 1.0
    tone_fraction: float = 0.25  # probability that a training crop is a tone
    crop_frames: int = 100  # scored frames per crop (0.5 s)
    context_frames: int = 16  # lead-in frames decoded but not scored
    low_tone_clips: int = 0  # more tones, from the lowest octave (110-220 Hz) only
    low_tone_seed: int = 3

    def __post_init__(self) -> None:
        for name in ("speech_clips", "tone_clips", "crop_frames"):
            setattr(self, name, number(f"data.{name}", getattr(self, name), integer=True, gt=0))
        for name in (
            "speech_seed",
            "tone_seed",
            "context_frames",
            "low_tone_clips",
            "low_tone_seed",
        ):
            setattr(self, name, number(f"data.{name}", getattr(self, name), integer=True, ge=0))
        self.tone_seconds = number("data.tone_seconds", self.tone_seconds, gt=0)
        self.tone_fraction = number("data.tone_fraction", self.tone_fraction, ge=0, le=1)


@dataclass
class KMeansSection:
    """The codebook fit: Lloyd iterations over at most `max_frames` frames.

    `tone_codes` > 0 fits that many codes on the tone frames alone and the rest on the
    speech frames alone (each source sampled in proportion to its frames): in a joint fit
    the speech frames' spread draws the centroids, and steady tones a few semitones apart
    (a low sine excites two or three channels) share one code, so their pitch comes back
    in steps. 0 fits one codebook on all frames.
    """

    iterations: int = 20
    max_frames: int = 120_000
    tone_codes: int = 0

    def __post_init__(self) -> None:
        self.iterations = number("kmeans.iterations", self.iterations, integer=True, gt=0)
        self.max_frames = number("kmeans.max_frames", self.max_frames, integer=True, gt=0)
        self.tone_codes = number("kmeans.tone_codes", self.tone_codes, integer=True, ge=0)


@dataclass
class CochlearLoss:
    """Weights: multi-scale log-mel L1 (each scale n_fft, hop, n_mels), cochleagram L1 and
    multi-scale spectral convergence (linear STFT magnitudes, at the same scales' n_fft and
    hop: ||S(out)| - |S(ref)|| / ||S(ref)||, as in Parallel WaveGAN's STFT loss).

    Why spectral convergence: log-mel L1 between two pure sines is nearly flat away from
    the right pitch (target 125 Hz: 120 Hz costs 0.95, 167 Hz 1.20, 125 Hz 0.11), so a
    decoder that renders a low sine at the wrong pitch gets no pull toward the right one.
    Optimising a decoded 125 Hz sine's carrier amplitudes directly: log-mel L1 left it at
    167 Hz after 300 steps, spectral convergence moved it to 124 Hz within 100."""

    mel: float = 1.0
    cochleagram: float = 1.0
    spectral_convergence: float = 0.0
    scales: list[list[int]] = field(
        default_factory=lambda: [[256, 64, 40], [512, 128, 64], [1024, 256, 80], [2048, 512, 128]]
    )

    def __post_init__(self) -> None:
        self.mel = number("loss.mel", self.mel, ge=0)
        self.cochleagram = number("loss.cochleagram", self.cochleagram, ge=0)
        self.spectral_convergence = number(
            "loss.spectral_convergence", self.spectral_convergence, ge=0
        )
        if not isinstance(self.scales, list) or not self.scales:
            raise ValueError(
                f"loss.scales must be a list of [n_fft, hop, n_mels], got {self.scales!r}"
            )
        for i, scale in enumerate(self.scales):
            if not isinstance(scale, list) or len(scale) != 3:
                raise ValueError(f"loss.scales[{i}] must be [n_fft, hop, n_mels], got {scale!r}")
            for j, v in enumerate(scale):
                number(f"loss.scales[{i}][{j}]", v, integer=True, gt=0)


@dataclass
class CochlearRecipe(TokenizerRecipe):
    """One cochlear tokenizer run; `out_dir` and `init_from` are relative to the recipe
    file's folder.

    `init_from` names a card to start from: its codebook and frame statistics are kept (no
    k-means), so its codes, and any model trained on them, stay valid, and only its decoder
    trains on. The card's config must equal this recipe's `[tokenizer]` and seed."""

    name: str
    kind: str = "cochlear"
    seed: int = 0
    out_dir: str = "."
    init_from: str = ""
    batch_size: int = 16
    threads: int = 1  # 0 = leave torch's default
    tokenizer: dict[str, Any] = field(default_factory=dict)
    data: CochlearData = field(default_factory=CochlearData)
    kmeans: KMeansSection = field(default_factory=KMeansSection)
    loss: CochlearLoss = field(default_factory=CochlearLoss)
    optim: OptimSection = field(default_factory=OptimSection)
    path: Path | None = None

    def __post_init__(self) -> None:
        self.check_common(("cochlear",))
        self.init_from = string("init_from", self.init_from, empty=True)

    def init_dir(self) -> Path | None:
        if not self.init_from:
            return None
        base = self.path.parent if self.path is not None else Path.cwd()
        return (base / self.init_from).resolve()


def parse_cochlear_recipe(table: dict[str, Any], path: Path | None = None) -> CochlearRecipe:
    """A parsed TOML table -> recipe; unknown keys are errors that name them."""
    sections = {
        "data": CochlearData,
        "kmeans": KMeansSection,
        "loss": CochlearLoss,
        "optim": OptimSection,
    }
    return parse_sections(CochlearRecipe, table, sections, path)


def load_cochlear_recipe(path: str | Path) -> CochlearRecipe:
    """Reads and validates a cochlear tokenizer recipe TOML file."""
    table, resolved = read_toml(path)
    return parse_cochlear_recipe(table, resolved)


def build_tokenizer(recipe: CochlearRecipe) -> Any:
    from mmntp.tokenizers.audio_cochlear import CochlearTokenizer

    try:
        return CochlearTokenizer(**recipe.tokenizer, seed=recipe.seed)
    except TypeError as err:
        raise ValueError(f"tokenizer: {err}") from None


# -- data ------------------------------------------------------------------------------


def training_pool(data: CochlearData) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(speech clips, tone clips) of the training pool; speech is cached on disk."""
    from mmntp.data.audio import TRAIN_VOICES, speech_clips, tone_clips

    speech = [c for c, _, _ in speech_clips(data.speech_clips, data.speech_seed, TRAIN_VOICES)]
    tones = [c for c, _, _ in tone_clips(data.tone_clips, data.tone_seed, data.tone_seconds)]
    low = tone_clips(data.low_tone_clips, data.low_tone_seed, data.tone_seconds, octaves=1.0)
    return speech, tones + [c for c, _, _ in low]


@dataclass
class EncodedClip:
    wave: torch.Tensor  # (frames * hop,) zero-padded
    frames: torch.Tensor  # cochleagram [C, frames]
    codes: torch.Tensor  # (frames,)


@torch.no_grad()
def cochleagrams(tok: Any, clips: list[np.ndarray]) -> list[EncodedClip]:
    out = []
    for clip in clips:
        x = torch.from_numpy(np.asarray(clip, dtype=np.float32))
        frames = tok.cochleagram(x)
        wave = torch.nn.functional.pad(x, (0, frames.shape[1] * tok.hop - x.numel()))
        out.append(EncodedClip(wave, frames, torch.zeros(0, dtype=torch.long)))
    return out


@torch.no_grad()
def fit_cochlear_codebook(
    frames: torch.Tensor,
    speech: list[EncodedClip],
    tones: list[EncodedClip],
    size: int,
    recipe: CochlearRecipe,
    progress: bool = True,
) -> tuple[torch.Tensor, float]:
    """The card's codebook [size, C] and its mean squared error over `frames` (the joint
    sample): one fit on `frames`, or with `kmeans.tone_codes` a fit per source."""
    from mmntp.tokenizers.audio_cochlear import nearest_code

    km, seed = recipe.kmeans, recipe.seed
    if not km.tone_codes:
        return fit_codebook(frames, size, km.iterations, seed, progress)
    if not 0 < km.tone_codes < size or not tones:
        raise ValueError(
            f"kmeans.tone_codes must be below codebook_size ({size}) and needs tone clips, "
            f"got {km.tone_codes}"
        )
    gen = torch.Generator().manual_seed(seed)
    parts, total = [], sum(c.frames.shape[1] for c in speech + tones)
    for clips, codes in ((speech, size - km.tone_codes), (tones, km.tone_codes)):
        own = torch.cat([c.frames.T for c in clips])  # [n, C]
        keep = max(codes, km.max_frames * own.shape[0] // total)
        if own.shape[0] > keep:
            own = own[torch.randperm(own.shape[0], generator=gen)[:keep]]
        parts.append(fit_codebook(own, codes, km.iterations, seed, progress)[0])
    codebook = torch.cat(parts)
    mse = float(((frames - codebook[nearest_code(frames, codebook)]) ** 2).sum(-1).mean())
    return codebook, mse


def fit_codebook(
    frames: torch.Tensor, size: int, iterations: int, seed: int, progress: bool = True
) -> tuple[torch.Tensor, float]:
    """k-means on rows [N, D] -> (codebook [size, D], final mean squared error)."""
    from mmntp.tokenizers.audio_cochlear import nearest_code

    gen = torch.Generator().manual_seed(seed)
    n = frames.shape[0]
    if n < size:
        raise ValueError(f"k-means needs at least {size} frames, got {n}")
    centres = frames[torch.randperm(n, generator=gen)[:size]].clone()
    mse = float("nan")
    bar = tqdm(range(iterations), desc="k-means", unit="iter", disable=not progress)
    for _ in bar:
        assign = nearest_code(frames, centres)
        sums = torch.zeros_like(centres).index_add_(0, assign, frames)
        counts = torch.bincount(assign, minlength=size).float()
        empty = counts == 0
        centres = torch.where(empty[:, None], centres, sums / counts.clamp(min=1)[:, None])
        if empty.any():  # re-seed empty clusters from random frames
            pick = torch.randint(0, n, (int(empty.sum()),), generator=gen)
            centres[empty] = frames[pick]
        mse = float(((frames - centres[assign]) ** 2).sum(-1).mean())
        bar.set_postfix({"mse": f"{mse:.4g}", "empty": int(empty.sum())})
    return centres, mse


def spectral_losses(
    out: torch.Tensor, target: torch.Tensor, scales: list[list[int]], sample_rate: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(multi-scale log-mel L1, multi-scale spectral convergence), each the mean over
    `scales`, from one STFT of each signal per scale. Spectral convergence is
    ||S(out)| - |S(target)||_F / ||S(target)||_F on linear magnitudes."""
    from mmntp.eval.audio import log_mel, stft_magnitude

    mel = out.new_zeros(())
    sc = out.new_zeros(())
    for n_fft, hop, n_mels in scales:
        a, b = stft_magnitude(out, n_fft, hop), stft_magnitude(target, n_fft, hop)
        mel = mel + (log_mel(a, n_mels, sample_rate) - log_mel(b, n_mels, sample_rate)).abs().mean()
        sc = sc + torch.linalg.norm(a - b) / torch.linalg.norm(b).clamp(min=1e-8)
    return mel / len(scales), sc / len(scales)


class CropSampler:
    """Random training crops (input frames with lead-in, scored target samples) from a seed."""

    def __init__(
        self, speech: list[EncodedClip], tones: list[EncodedClip], data: CochlearData, seed: int
    ) -> None:
        self.speech, self.tones, self.data = speech, tones, data
        self.seed = seed

    def batch(self, step: int, size: int, hop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (codes [B, ctx + crop], target waves [B, (ctx + crop) * hop])."""
        rng = np.random.default_rng([self.seed, step])
        span = self.data.context_frames + self.data.crop_frames
        codes, waves = [], []
        for _ in range(size):
            pool = self.tones if self.tones and rng.random() < self.data.tone_fraction else None
            pool = pool or self.speech
            clip = pool[int(rng.integers(len(pool)))]
            c, w = clip.codes, clip.wave
            if c.numel() < span:  # pad short clips with the silence code of their end
                c = torch.cat([c, c[-1:].expand(span - c.numel())])
                w = torch.nn.functional.pad(w, (0, span * hop - w.numel()))
            start = int(rng.integers(c.numel() - span + 1))
            codes.append(c[start : start + span])
            waves.append(w[start * hop : (start + span) * hop])
        return torch.stack(codes), torch.stack(waves)


# -- the run -----------------------------------------------------------------------------


def start_from_card(tok: Any, folder: Path) -> Any:
    """The card in `folder`, checked to be the tokenizer the recipe describes (`tok`)."""
    from mmntp.tokenizers import load_tokenizer

    card = load_tokenizer(folder)
    if type(card) is not type(tok):
        raise ValueError(f"init_from {folder}: a {type(card).__name__}, not a cochlear card")
    mine, theirs = tok.config(), card.config()
    differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
    if differ:
        raise ValueError(
            f"init_from {folder}: its config differs from this recipe's [tokenizer] and seed "
            f"in {differ}"
        )
    return card


@torch.no_grad()
def codebook_stage(
    tok: Any,
    speech: list[EncodedClip],
    tones: list[EncodedClip],
    recipe: CochlearRecipe,
    progress: bool,
) -> tuple[float, int]:
    """Sets tok's frame statistics and codebook by k-means over a sample of the pool's
    frames, or keeps the card's with `init_from`; -> (quantisation MSE, frames sampled)."""
    from mmntp.tokenizers.audio_cochlear import nearest_code

    frames = torch.cat([c.frames.T for c in speech + tones])  # [N, C]
    gen = torch.Generator().manual_seed(recipe.seed)
    if frames.shape[0] > recipe.kmeans.max_frames:
        frames = frames[torch.randperm(frames.shape[0], generator=gen)[: recipe.kmeans.max_frames]]
    if recipe.init_from:
        error = frames - tok.codebook[nearest_code(frames, tok.codebook)]
        return float((error**2).sum(-1).mean()), frames.shape[0]
    tok.frame_mean = frames.mean(0)
    tok.frame_std = frames.std(0).clamp(min=1e-4)
    tok.codebook, mse = fit_cochlear_codebook(
        frames, speech, tones, tok.codebook_size, recipe, progress
    )
    return mse, frames.shape[0]


@dataclass
class CochlearTrainResult:
    """What a run did: decoder steps, wall time (both stages), losses and the report."""

    steps: int
    wall_s: float
    kmeans_s: float
    kmeans_mse: float
    kmeans_frames: int
    losses: list[float]
    report: dict[str, Any]
    out_dir: Path | None


def fit_decoder(
    tok: Any,
    sampler: CropSampler,
    recipe: CochlearRecipe,
    max_steps: int,
    progress: bool = True,
) -> list[float]:
    """Trains tok.decoder in place; returns the per-step losses."""
    optim = recipe.optim
    model = tok.decoder.train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": optim.weight_decay},
            {"params": rest, "weight_decay": 0},
        ],
        lr=optim.lr,
        betas=optim.betas,
        eps=optim.eps,
    )
    hop, ctx = tok.hop, recipe.data.context_frames
    span = ctx + recipe.data.crop_frames
    carriers = model.carrier_table(0, span * hop)
    losses: list[float] = []
    bar = tqdm(range(max_steps), desc=recipe.name, unit="step", disable=not progress)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, optim)
        codes, target = sampler.batch(step, recipe.batch_size, hop)
        z = ((tok.codebook[codes] - tok.frame_mean) / tok.frame_std).transpose(1, 2)  # [B, C, F]
        state = model.initial_state(codes.shape[0])
        amps, _ = model.amplitudes(z, state)
        wave = model.synthesise(amps, state["amps"], 0, carriers)  # [B, span * hop]
        out, ref = wave[:, ctx * hop :], target[:, ctx * hop :]
        mel, sc = spectral_losses(out, ref, recipe.loss.scales, tok.sample_rate)
        loss = recipe.loss.mel * mel
        logs = {"mel": mel.item()}
        if recipe.loss.spectral_convergence:
            loss = loss + recipe.loss.spectral_convergence * sc
            logs["sc"] = sc.item()
        if recipe.loss.cochleagram:
            coch = (tok.front(out) - tok.front(ref)).abs().mean()
            loss = loss + recipe.loss.cochleagram * coch
            logs["coch"] = coch.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
        opt.step()
        losses.append(loss.item())
        bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()})
    model.eval()
    return losses


def train_cochlear(
    recipe_path_or_recipe: str | Path | CochlearRecipe,
    out_dir: str | Path | None = None,
    max_steps: int | None = None,
    progress: bool = True,
    write: bool = True,
    eval_limit: int | None = None,
) -> tuple[Any, CochlearTrainResult]:
    """Fits the codebook, trains the decoder, measures and (if `write`) saves the card.

    `max_steps` overrides recipe.optim.max_steps (the schedule is stretched to it);
    `eval_limit` measures on fewer held-out clips (tests). Returns (tokenizer, result).
    """
    from mmntp.eval.cochlear import evaluate_cochlear

    recipe = recipe_path_or_recipe
    if not isinstance(recipe, CochlearRecipe):
        recipe = load_cochlear_recipe(recipe)
    if max_steps is not None:
        recipe.optim = OptimSection(
            **{
                **{f.name: getattr(recipe.optim, f.name) for f in fields(OptimSection)},
                "max_steps": int(max_steps),
                "warmup_steps": min(recipe.optim.warmup_steps, int(max_steps)),
            }
        )
    threads = torch.get_num_threads()
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    try:
        tok = build_tokenizer(recipe)
        if recipe.init_from:
            tok = start_from_card(tok, recipe.init_dir())
        speech_clips, tone_clips = training_pool(recipe.data)
        began = time.perf_counter()
        speech, tones = cochleagrams(tok, speech_clips), cochleagrams(tok, tone_clips)
        mse, n_frames = codebook_stage(tok, speech, tones, recipe, progress)
        kmeans_s = time.perf_counter() - began
        for clip in speech + tones:
            clip.codes = tok.quantize(clip.frames.T)
        sampler = CropSampler(speech, tones, recipe.data, recipe.seed)
        with torch.random.fork_rng():
            torch.manual_seed(recipe.seed)
            losses = fit_decoder(tok, sampler, recipe, recipe.optim.max_steps, progress)
        wall_s = time.perf_counter() - began
        report = evaluate_cochlear(tok, limit=eval_limit)
    finally:
        torch.set_num_threads(threads)
    directory = Path(out_dir).resolve() if out_dir is not None else recipe.output_dir()
    result = CochlearTrainResult(
        recipe.optim.max_steps, wall_s, kmeans_s, mse, n_frames, losses, report, None
    )
    if write:
        tok.save(directory, card=render_card(tok, recipe, result))
        if (
            recipe.path is not None
            and recipe.path.resolve() != (directory / "recipe.toml").resolve()
        ):
            shutil.copyfile(recipe.path, directory / "recipe.toml")
        print(f"wrote {directory}", file=sys.stderr)
        result.out_dir = directory
    return tok, result
