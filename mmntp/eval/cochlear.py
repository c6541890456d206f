"""The cochlear tokenizer's card figures, on held-out voices and tones.

* speech: `heldout_speech()` (the held-out espeak-ng voices): SI-SNR and log-mel distance
  of the round trip, the cochleagram quantisation error (relative L2 of frames minus their
  codes' centroids) and the round-trip cochleagram error, codebook use;
* tones: `tone_clips(200, HELDOUT_TONE_SEED)` (a seed training never uses): the fraction
  whose decoded pitch (`estimate_pitch`) is within a semitone of the prompt frequency,
  and a quarter-semitone sweep per waveform (how finely the codes hold pitch);
* decode real-time factor on one thread.

The speech, tone and speed figures are `mmntp.eval.audio_tokenizers`' (the same for every
audio tokenizer); the cochleagram figures are this module's.

`python -m mmntp.eval.cochlear CARD_FOLDER` prints them.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import torch

HELDOUT_TONES = 200  # as evaluate_audio_tokenizer's default


@torch.no_grad()
def evaluate_cochlear(tok: Any, limit: int | None = None) -> dict[str, Any]:
    """Measures `tok` (a CochlearTokenizer) on one thread -> {"generic": ..., "cochlear": ...}.

    "generic" is `evaluate_audio_tokenizer` (held-out speech SI-SNR / mel distance, tones
    within a semitone, codebook use, real-time factors); "cochlear" adds the cochleagram
    figures on the same held-out speech. `limit` uses that many clips and tones (tests).
    """
    from mmntp.data.audio import heldout_speech
    from mmntp.eval.audio_tokenizers import SWEEP_STEP, evaluate_audio_tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        generic = evaluate_audio_tokenizer(
            tok,
            n_speech=limit or 24,
            n_tones=limit or HELDOUT_TONES,
            sweep_step=SWEEP_STEP if limit is None else 12.0,  # tests: an octave apart
        )
        qerr, rt_err, used = [], [], []
        for clip in heldout_speech(limit or 24):
            frames = tok.cochleagram(clip)  # [C, F]
            codes = tok.quantize(frames.T)
            used.append(codes)
            qerr.append(float((frames - tok.codebook[codes].T).norm() / frames.norm()))
            back = tok.cochleagram(tok.decode(codes))[:, : frames.shape[1]]
            rt_err.append(float((frames - back).norm() / frames.norm()))
    finally:
        torch.set_num_threads(threads)
    counts = torch.bincount(torch.cat(used), minlength=tok.codebook_size).float()
    probs = counts[counts > 0] / counts.sum()
    return {
        "generic": generic,
        "cochlear": {
            "quantisation_error": float(np.mean(qerr)),
            "roundtrip_cochleagram_error": float(np.mean(rt_err)),
            "speech_codes_used": int((counts > 0).sum()),
            "speech_code_perplexity": float(torch.exp(-(probs * probs.log()).sum())),
        },
    }


def format_figures(r: dict[str, Any]) -> str:
    """Markdown: the generic audio-tokenizer table, then the cochleagram figures."""
    from mmntp.eval.audio_tokenizers import format_figures as generic_figures

    c = r["cochlear"]
    rows = [
        "| cochleagram measure (held-out speech) | value |",
        "|---|---|",
        f"| quantisation error: relative L2 of frames minus their codes' centroids "
        f"| {c['quantisation_error']:.3f} |",
        f"| round-trip error: relative L2 of cochleagram(decode(codes)) minus the original's "
        f"| {c['roundtrip_cochleagram_error']:.3f} |",
        f"| codes used on held-out speech | {c['speech_codes_used']} (perplexity "
        f"{c['speech_code_perplexity']:.0f}) |",
    ]
    return generic_figures(r["generic"]) + "\n\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    from mmntp.tokenizers import load_tokenizer

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m mmntp.eval.cochlear CARD_FOLDER", file=sys.stderr)
        return 2
    report = evaluate_cochlear(load_tokenizer(argv[0]))
    print(format_figures(report))
    return 0 if not math.isnan(report["generic"]["speech"]["mel_distance"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
