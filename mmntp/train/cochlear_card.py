"""The cochlear tokenizer card's CARD.md, written by `mmntp.train.cochlear.train_cochlear`:
front end, codebook, decoder, training and held-out figures, from the tokenizer, its recipe
and the run's result. The fixed prose (measurements made once) lives here beside it.
"""

from __future__ import annotations

from typing import Any

import torch

# The recipe and result types live in mmntp.train.cochlear, which imports this module; the
# card reads their fields only, so they are typed loosely here rather than imported back.
CochlearRecipe = Any
CochlearTrainResult = Any


# Measured once (`k-means` on 40,000 training frames, 10 iterations, relative L2 error on the
# 24 held-out speech clips): the reason the card's codebook has 1024 codes.
CODEBOOK_CHOICE = [
    "- Size chosen by measuring (k-means on 40,000 training frames, 10 iterations; relative "
    "L2 quantisation error on held-out speech, codes used there): 256 codes 0.187 (223 "
    "used), 1024 codes 0.162 (767), 4096 codes 0.142 (2103), 8192 codes 0.134 (2998). "
    "From 1024, 4x the codes cut the error by 12% and 8x (AuriStream's 8192) by 17%, while "
    "the language model's vocabulary and the codes' sparsity grow as much, so the card "
    "keeps 1024 (10 bits, 2.0 kbit/s); `codebook_size` is configurable.",
]


def _tone_codes_line(recipe: CochlearRecipe, size: int) -> list[str]:
    codes = recipe.kmeans.tone_codes
    if not codes:
        return []
    return [
        f"- Split fit (`kmeans.tone_codes = {codes}`): {codes} codes are k-means on the tone "
        f"frames alone and the other {size - codes} on "
        "the speech frames alone, each source sampled in proportion to its frames. In one "
        "joint fit the speech frames' spread draws the centroids and steady tones a few "
        "semitones apart share a code (audio-cochlear-16k returns 145 quarter-semitone sine "
        "tones on 22 pitches)."
    ]


def _init_from_line(recipe: CochlearRecipe) -> list[str]:
    if not recipe.init_from:
        return []
    return [
        f"- This card's codebook and frame statistics are those of `{recipe.init_from}` "
        "(recipe `init_from`; its k-means as above, not run again): only the decoder trained "
        "on, so the codes, and any model trained on them, are unchanged."
    ]


ENVELOPE_TEXT = {
    "rectified": "half-wave rectification",
    "analytic": "the magnitude of each channel's complex (analytic) gammatone output, flat "
    "for a steady tone (half-wave rectification ripples at the input frequency, which the "
    "low-pass below cannot remove under ~200 Hz)",
}


RUN_NOTES = [
    "- An earlier run (1400 steps, tone fraction 0.25, no 4096-point mel scale) measured "
    "log-mel distance 0.751 and 50% of 48 held-out tones within a semitone; this recipe's "
    "changes were kept for the gain.",
    "- Tone pitch errors concentrate in sine tones, whose cochleagram excites only two or "
    "three channels. In that earlier run the decoder looked like the limit (decoding the "
    "unquantised frames gave about the same pitch errors); the tone sweep added on "
    "2026-12-02 shows the codebook is the limit of audio-cochlear-16k's 9000-step decoder: "
    "145 quarter-semitone sine tones come back on 22 pitches (70% within a semitone), "
    "square on 42 (92%), sawtooth on 32 (81%), each a staircase of 1-2 semitone steps. "
    "Four times the training tones in one joint fit gave 36 / 67 / 67 pitches but sines "
    "within a semitone fell to 58% (square 100%, sawtooth 99%; held-out tones 79.5%, speech "
    "log-mel 0.737): low sines still shared codes, hence the split fit.",
    "- Earlier decoders on the same codebook (k-means is deterministic in the recipe's "
    "seed, so the codes did not change): 1700 steps at tone fraction 0.3 measured log-mel "
    "distance 0.743 and 61.0% of the 200 held-out tones within a semitone (median 0.760); "
    "4500 steps at tone fraction 0.4 measured 0.727 and 71.0%; this card has 9000.",
]


def render_card(tok: Any, recipe: CochlearRecipe, result: CochlearTrainResult) -> str:
    """CARD.md: front end, codebook, decoder, training and held-out figures."""
    from mmntp.eval.cochlear import format_figures

    name = recipe.output_dir().name if recipe.path is not None else recipe.name
    data, r = recipe.data, result.report
    centres = tok.centres
    lines = [
        f"# {name}",
        "",
        f"`CochlearTokenizer` (type `{tok.type_name}`): 16 kHz mono audio <-> one code per "
        f"{1000 * tok.hop / tok.sample_rate:g} ms cochleagram frame ({tok.frame_rate:g} tokens "
        f"per second) from one codebook of {tok.codebook_size}, in the style of AuriStream's "
        "WavCoch; a causal learned decoder back to the waveform that streams frame by frame.",
        "",
        "## Front end",
        "",
        f"- {tok.channels} 4th-order gammatone filters, centre frequencies equally spaced on "
        f"the ERB-rate scale from {tok.f_min:g} to {tok.f_max:g} Hz "
        f"({float(centres[1] - centres[0]):.1f} Hz apart at the bottom, "
        f"{float(centres[-1] - centres[-2]):.0f} Hz at the top); FIR impulse responses of "
        f"{tok.fir_length} samples ({1000 * tok.fir_length / tok.sample_rate:g} ms), unit gain at "
        "the centre, applied causally by FFT convolution.",
        f"- Envelope: {ENVELOPE_TEXT[tok.envelope]}, then a causal Hann low-pass of "
        f"{2 * tok.hop} samples sampled every {tok.hop} samples (frame i sees samples up to "
        "(i + 1) x hop).",
        f"- Compression: (envelope + 1e-5)^{tok.compression:g}.",
        "",
        "## Codebook",
        "",
        f"- k-means (Euclidean) over {min(recipe.kmeans.max_frames, 10**9):,} cochleagram frames "
        f"of the training pool, {recipe.kmeans.iterations} Lloyd iterations; {tok.codebook_size}"
        " codes (10 bits, 2.0 kbit/s at 200 tokens/s).",
        *_tone_codes_line(recipe, tok.codebook_size),
        *_init_from_line(recipe),
        *CODEBOOK_CHOICE,
        "",
        "## Decoder",
        "",
        f"- Codes -> their codebook vectors (normalised per channel) -> causal conv "
        f"(kernel 3) to width {tok.width} -> {len(tok.dilations)} residual causal dilated "
        f"conv blocks (kernel 3, dilations {tok.dilations}) at the frame rate -> one "
        f"log-amplitude per frame for each of {tok.carriers} fixed sinusoidal carriers "
        f"log-spaced from {tok.carrier_range[0]:g} to {tok.carrier_range[1]:g} Hz "
        f"(fixed random phases) -> amplitudes ramped linearly from the previous frame -> "
        "additive synthesis on the absolute sample index.",
        f"- {tok.num_parameters():,} parameters with the codebook (float32 in "
        "`tokenizer.safetensors`).",
        "- Causal with no look-ahead: each frame yields exactly 80 samples; the stream "
        "decoder carries every conv's input tail, the last amplitudes and the sample index, "
        "so frame-by-frame decoding equals the one-shot decode (float tolerance) and "
        "`flush()` returns nothing.",
        "- Why carriers and not conv upsampling: a time-invariant decoder fed a steady code "
        "sequence (a held tone) through nearest or transposed upsampling outputs a signal "
        "periodic in the 80-sample hop, a 200 Hz buzz, so it cannot hold a 110 Hz tone; the "
        "carriers keep their own phase. Iterative phase reconstruction through the gammatone "
        "bank was not tried: it does not stream.",
        "",
        "## Training",
        "",
        f"- Recipe: `recipe.toml` (`mmntp train-tokenizer tokenizers/{name}/recipe.toml`; "
        "`mmntp.train.cochlear.train_cochlear`).",
        f"- Data: {data.speech_clips} espeak-ng sentences (seed {data.speech_seed}) in the "
        f"{_voices()} training voices (random speed 130-200, pitch 30-70; cached on disk) and "
        f"{data.tone_clips} tones of {data.tone_seconds:g} s (sine / square / sawtooth, "
        f"110-880 Hz, seed {data.tone_seed})"
        + (
            f" and {data.low_tone_clips} more from the lowest octave, 110-220 Hz (seed "
            f"{data.low_tone_seed})"
            if data.low_tone_clips
            else ""
        )
        + f"; a crop is a tone with probability {data.tone_fraction:g}. Held-out voices and "
        "tones are never trained on.",
        f"- Decoder: {result.steps} steps"
        + (f", continuing from `{recipe.init_from}`'s decoder," if recipe.init_from else "")
        + f" of batch {recipe.batch_size} crops of "
        f"{data.crop_frames} frames ({data.crop_frames * tok.hop / tok.sample_rate:g} s scored, "
        f"after {data.context_frames} lead-in frames); AdamW lr {recipe.optim.lr:g} (warm-up "
        f"{recipe.optim.warmup_steps}, cosine to {recipe.optim.min_lr_ratio:g}x), seed "
        f"{recipe.seed}. Loss: {recipe.loss.mel:g} x multi-scale log-mel L1 (n_fft, hop, mels "
        f"{[tuple(s) for s in recipe.loss.scales]}) + {recipe.loss.cochleagram:g} x cochleagram "
        "L1 between decoded and original crop"
        + (
            f" + {recipe.loss.spectral_convergence:g} x spectral convergence (linear STFT "
            "magnitudes at the same n_fft and hop)."
            if recipe.loss.spectral_convergence
            else "."
        ),
        f"- Wall time: {result.wall_s / 60:.1f} min ({result.kmeans_s:.0f} s of it the codebook) "
        f"on {recipe.threads or torch.get_num_threads()} CPU thread(s) of this project's shared "
        f"machine, torch {torch.__version__}; final training loss {result.losses[-1]:.4f}.",
        "",
        "## Measured (held-out)",
        "",
        "Speech: the 24 `heldout_speech()` clips (voices never trained on); tones: 200 "
        "`tone_clips` from `mmntp.eval.audio_tokenizers.HELDOUT_TONE_SEED` (training uses "
        f"seed {data.tone_seed}). Speed on one thread. SI-SNR is far below 0 dB by design: "
        "the decoder is trained on log-mel magnitudes and the carriers' phases are not the "
        "original's, so the waveform is uncorrelated with the original sample by sample; the "
        "log-mel and cochleagram figures are the ones that measure the round trip.",
        "",
        format_figures(r),
        "",
        *RUN_NOTES,
        "",
        f"Regenerate: `python -m mmntp.eval.cochlear tokenizers/{name}`.",
    ]
    return "\n".join(lines) + "\n"


def _voices() -> int:
    from mmntp.data.audio import TRAIN_VOICES

    return len(TRAIN_VOICES)
