"""The tone sweep of `mmntp.eval.audio_tokenizers`: it tells a tokenizer that keeps every
pitch from one that holds pitch in steps."""

from types import SimpleNamespace

import numpy as np

from mmntp.data.audio import SAMPLE_RATE, tone
from mmntp.eval.audio import estimate_pitch
from mmntp.eval.audio_tokenizers import format_figures, tone_sweep


class _Tokenizer:
    """Codes are the clip itself; decoding re-synthesises a sine at the clip's pitch,
    rounded to the nearest multiple of `grid` semitones above 110 Hz (0: kept as is)."""

    sample_rate = SAMPLE_RATE

    def __init__(self, grid: float) -> None:
        self.grid = grid

    def encode(self, clip):
        return SimpleNamespace(codes=np.asarray(clip))

    def decode(self, codes):
        pitch = estimate_pitch(codes, SAMPLE_RATE)
        if self.grid:
            steps = round(12 * np.log2(pitch / 110.0) / self.grid) * self.grid
            pitch = 110.0 * 2 ** (steps / 12)
        return tone("sine", pitch, len(codes) / SAMPLE_RATE)


def test_sweep_counts_every_pitch_a_faithful_tokenizer_keeps():
    sweep = tone_sweep(_Tokenizer(0), step=1.0)
    assert sweep["tones"] == 37  # 110..880 Hz, one semitone apart
    for waveform in ("sine", "square", "sawtooth"):
        assert sweep[waveform]["within_semitone"] == 1.0
        assert sweep[waveform]["pitch_levels"] == 37


def test_sweep_exposes_a_staircase():
    """Pitch held in 3-semitone steps: 13 pitches come back, and a tone 1.5 semitones from
    its step misses (about a third of the sweep)."""
    sweep = tone_sweep(_Tokenizer(3.0), step=0.5)
    for waveform in ("sine", "square", "sawtooth"):
        assert sweep[waveform]["pitch_levels"] == 13
        assert 0.5 < sweep[waveform]["within_semitone"] < 0.9
    report = {
        "speech": {
            "n": 1,
            "seconds": 1.0,
            "si_snr_db": 0.0,
            "si_snr_db_median": 0.0,
            "mel_distance": 0.0,
            "mel_distance_median": 0.0,
        },
        "tones": {
            "n": 1,
            "seed": 0,
            "within_semitone": 1.0,
            "within_semitone_of_original_pitch": 1.0,
            "median_semitone_error": 0.0,
        },
        "speed": {"threads": 1, "encode_rtf": 0.0, "decode_rtf": 0.0, "first_frame_decode_ms": 0.0},
        "sweep": sweep,
    }
    assert "| sine sweep: 73 tones 0.5 semitone apart, 110-880 Hz" in format_figures(report)
