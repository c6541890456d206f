"""Held-out figures for any audio tokenizer with `encode(clip)` / `decode(codes)`.

`evaluate_audio_tokenizer(tok)` round-trips

* speech of the held-out espeak-ng voices (`heldout_speech()`, never trained on):
  SI-SNR (dB) and log-mel distance (`mmntp.eval.audio`), per-clip means and medians;
* tones (`tone_clips(n, seed=HELDOUT_TONE_SEED)`): the fraction whose estimated pitch
  after the round trip is within one semitone of the prompt frequency (and of the pitch
  estimated on the original clip), plus the median error in semitones;
* a tone sweep (`tone_sweep`): per waveform, tones every quarter semitone from 110 to
  880 Hz, the fraction within a semitone after the round trip and how many distinct
  pitches come back: far fewer pitches than tones means the codes hold pitch in steps;
* codebook usage per level over all those codes (fraction of codes used, perplexity);
* speed: encode and decode real-time factors (seconds of compute per second of audio)
  on this machine, measured on the held-out speech, and the latency of decoding one frame.

It needs only `encode(clip) -> Encoded(codes (T,) or (T, K))`, `decode(codes) -> 1-D
samples`, and the attributes `sample_rate` (default 16 kHz) and `frame_rate`; discrete
tokenizers also give `codebook_sizes`, continuous ones simply get no usage figures.
`python -m mmntp.eval.audio_tokenizers CARD_DIR [--json]` prints a card's figures.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from typing import Any

import numpy as np
import torch

from mmntp.data.audio import (
    MAX_FREQUENCY,
    MIN_FREQUENCY,
    SAMPLE_RATE,
    WAVEFORMS,
    heldout_speech,
    tone,
    tone_clips,
)
from mmntp.eval.audio import estimate_pitch, mel_distance, semitones, si_snr

HELDOUT_TONE_SEED = 20_251_201  # training recipes draw their tones from other seeds
SWEEP_STEP = 0.25  # semitones between the sweep's tones


def _samples(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    return np.asarray(x, dtype=np.float32).reshape(-1)


def round_trip_pitch(tok: Any, clip: np.ndarray, rate: int) -> float:
    """The estimated pitch (Hz) of `clip` after the card's encode and decode."""
    with torch.no_grad():
        out = tok.decode(tok.encode(clip).codes)
    return estimate_pitch(_samples(out)[: len(clip)], rate)


def _codes_2d(codes: torch.Tensor) -> torch.Tensor:
    codes = torch.as_tensor(codes)
    return codes[:, None] if codes.dim() == 1 else codes.reshape(codes.shape[0], -1)


def bitrate(tok: Any) -> float | None:
    """Bits per second of a discrete tokenizer: frame_rate x sum(log2 codebook size)."""
    sizes = getattr(tok, "codebook_sizes", None)
    rate = getattr(tok, "frame_rate", None)
    if not sizes or not rate:
        return None
    return float(rate) * sum(math.log2(s) for s in sizes)


def codebook_usage(tok: Any, codes: list[torch.Tensor]) -> list[dict[str, float]]:
    """Per level: fraction of the codebook used and perplexity (exp entropy) of the codes."""
    sizes = getattr(tok, "codebook_sizes", None)
    if not sizes or not codes or codes[0].is_floating_point():
        return []
    allc = torch.cat([_codes_2d(c) for c in codes]).long()  # [N, K]
    out = []
    for level, size in enumerate(sizes):
        counts = torch.bincount(allc[:, level], minlength=size).double()
        p = counts / counts.sum()
        ppl = float(torch.exp(-(p * torch.log(p + 1e-12)).sum()))
        out.append(
            {"size": int(size), "used": float((counts > 0).float().mean()), "perplexity": ppl}
        )
    return out


@torch.no_grad()
def evaluate_audio_tokenizer(
    tok: Any,
    n_speech: int = 24,
    n_tones: int = 200,
    tone_seed: int = HELDOUT_TONE_SEED,
    sweep_step: float = SWEEP_STEP,
) -> dict[str, Any]:
    """Round-trip figures on held-out speech and tones; see the module docstring."""
    rate = int(getattr(tok, "sample_rate", SAMPLE_RATE))
    if rate != SAMPLE_RATE:
        raise ValueError(
            f"evaluate_audio_tokenizer: needs a {SAMPLE_RATE} Hz tokenizer, got {rate}"
        )
    all_codes: list[torch.Tensor] = []

    speech = heldout_speech(n_speech)
    snrs, mels, enc_s, dec_s, seconds = [], [], 0.0, 0.0, 0.0
    for clip in speech:
        t0 = time.perf_counter()
        codes = tok.encode(clip).codes
        t1 = time.perf_counter()
        recon = _samples(tok.decode(codes))
        t2 = time.perf_counter()
        enc_s, dec_s, seconds = enc_s + t1 - t0, dec_s + t2 - t1, seconds + len(clip) / rate
        all_codes.append(codes)
        snrs.append(si_snr(clip, recon))
        mels.append(mel_distance(clip, recon))

    tones = tone_clips(n_tones, tone_seed)
    errors, hits, hits_orig = [], 0, 0
    for clip, _, frequency in tones:
        codes = tok.encode(clip).codes
        all_codes.append(codes)
        recon = _samples(tok.decode(codes))[: len(clip)]
        pitch = estimate_pitch(recon, rate)
        err = semitones(pitch, frequency)
        errors.append(err)
        hits += err <= 1.0
        hits_orig += semitones(pitch, estimate_pitch(clip, rate)) <= 1.0

    # first-chunk latency: one frame through a fresh stream decoder (median of 20)
    frame = _codes_2d(all_codes[0])[:1]
    frame = frame[0] if torch.as_tensor(all_codes[0]).dim() == 1 else frame
    lat = []
    for _ in range(20):
        dec = tok.stream_decoder()
        t0 = time.perf_counter()
        dec.push(frame)
        lat.append(time.perf_counter() - t0)

    return {
        "speech": {
            "n": len(speech),
            "seconds": round(seconds, 2),
            "si_snr_db": float(np.mean(snrs)),
            "si_snr_db_median": float(np.median(snrs)),
            "mel_distance": float(np.mean(mels)),
            "mel_distance_median": float(np.median(mels)),
        },
        "tones": {
            "n": len(tones),
            "seed": tone_seed,
            "within_semitone": hits / len(tones),
            "within_semitone_of_original_pitch": hits_orig / len(tones),
            "median_semitone_error": float(statistics.median(errors)),
        },
        "sweep": tone_sweep(tok, sweep_step),
        "codebooks": codebook_usage(tok, all_codes),
        "bitrate_bps": bitrate(tok),
        "frame_rate": getattr(tok, "frame_rate", None),
        "speed": {
            "threads": torch.get_num_threads(),
            "encode_rtf": enc_s / seconds,
            "decode_rtf": dec_s / seconds,
            "first_frame_decode_ms": 1000 * float(np.median(lat)),
        },
    }


def tone_sweep(tok: Any, step: float = SWEEP_STEP, seconds: float = 0.5) -> dict[str, Any]:
    """Per waveform, tones every `step` semitones over the prompt range through the round
    trip: {"step", "tones", per waveform {"within_semitone", "pitch_levels"}}, where
    pitch_levels counts the distinct decoded pitches (1/8-semitone bins). A codebook that
    holds few tone spectra sends a whole run of neighbouring tones to one pitch."""
    rate = int(getattr(tok, "sample_rate", SAMPLE_RATE))
    span = 12 * math.log2(MAX_FREQUENCY / MIN_FREQUENCY)
    freqs = [MIN_FREQUENCY * 2 ** (k * step / 12) for k in range(int(span / step + 1e-9) + 1)]
    out: dict[str, Any] = {"step": step, "tones": len(freqs)}
    for waveform in WAVEFORMS:
        hits, levels = 0, set()
        for hz in freqs:
            clip = tone(waveform, hz, seconds, rate)
            pitch = round_trip_pitch(tok, clip, rate)
            hits += semitones(pitch, hz) <= 1.0
            if pitch > 0 and math.isfinite(pitch):
                levels.add(round(96 * math.log2(pitch / MIN_FREQUENCY)))
        out[waveform] = {"within_semitone": hits / len(freqs), "pitch_levels": len(levels)}
    return out


def format_figures(report: dict[str, Any]) -> str:
    """The report as Markdown: a figures table and a per-level codebook table."""
    s, t, v = report["speech"], report["tones"], report["speed"]
    rows = [
        "| measure | value |",
        "|---|---|",
        f"| held-out speech SI-SNR (mean / median, {s['n']} clips, {s['seconds']:.0f} s) "
        f"| {s['si_snr_db']:.2f} / {s['si_snr_db_median']:.2f} dB |",
        f"| held-out speech log-mel distance (mean / median) "
        f"| {s['mel_distance']:.3f} / {s['mel_distance_median']:.3f} |",
        f"| tones within 1 semitone of the prompt ({t['n']} tones, seed {t['seed']}) "
        f"| {t['within_semitone']:.1%} |",
        f"| tones within 1 semitone of the original's estimated pitch "
        f"| {t['within_semitone_of_original_pitch']:.1%} |",
        f"| tone median pitch error | {t['median_semitone_error']:.3f} semitones |",
    ]
    sweep = report.get("sweep")
    for waveform in WAVEFORMS if sweep else ():
        w = sweep[waveform]
        rows.append(
            f"| {waveform} sweep: {sweep['tones']} tones {sweep['step']:g} semitone apart, "
            f"{MIN_FREQUENCY}-{MAX_FREQUENCY} Hz: within 1 semitone, distinct pitches back "
            f"| {w['within_semitone']:.1%}, {w['pitch_levels']} |"
        )
    if report.get("bitrate_bps"):
        rows.append(f"| bitrate | {report['bitrate_bps']:.0f} bit/s |")
    rows += [
        f"| encode real-time factor ({v['threads']} thread(s)) | {v['encode_rtf']:.4f} |",
        f"| decode real-time factor ({v['threads']} thread(s)) | {v['decode_rtf']:.4f} |",
        f"| one-frame stream decode (first chunk) | {v['first_frame_decode_ms']:.2f} ms |",
    ]
    if report.get("codebooks"):
        rows += ["", "| level | codes | used | perplexity |", "|---|---|---|---|"]
        for i, c in enumerate(report["codebooks"]):
            rows.append(f"| {i} | {c['size']} | {c['used']:.1%} | {c['perplexity']:.1f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """`python -m mmntp.eval.audio_tokenizers CARD_DIR [--json] [--threads N]`."""
    from mmntp.tokenizers import load_tokenizer

    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0].startswith("-"):
        print("usage: python -m mmntp.eval.audio_tokenizers CARD_DIR [--json]", file=sys.stderr)
        return 2
    if "--threads" in args:
        torch.set_num_threads(int(args[args.index("--threads") + 1]))
    report = evaluate_audio_tokenizer(load_tokenizer(args[0]))
    print(json.dumps(report, indent=2) if "--json" in args else format_figures(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
