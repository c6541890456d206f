"""Audio data and measures: tones, espeak-ng speech, WAV I/O errors, pitch, SI-SNR, mel."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmntp.api.chunks import pcm16
from mmntp.data.audio import (
    SAMPLE_RATE,
    caption,
    espeak_available,
    read_wav,
    speech_clips,
    tone,
    tone_clips,
    wav_bytes,
)
from mmntp.eval.audio import estimate_pitch, mel_distance, semitones, si_snr


def test_tone_captions_and_pitch_read_back():
    clips = tone_clips(120, seed=3, seconds=0.5)
    for clip, text, freq in clips:
        assert text == caption(text.split()[1], freq)
        assert 110 <= freq <= 880 and clip.dtype == np.float32
        assert semitones(estimate_pitch(clip), freq) < 0.25, text
    assert {text.split()[1] for _, text, _ in clips} == {"sine", "square", "sawtooth"}


def test_pitch_of_noise_and_silence_is_nan():
    rng = np.random.default_rng(0)
    assert math.isnan(estimate_pitch(rng.standard_normal(SAMPLE_RATE)))
    assert math.isnan(estimate_pitch(np.zeros(SAMPLE_RATE)))
    assert semitones(float("nan"), 440.0) == math.inf


def test_si_snr_and_mel_distance():
    clip = tone("sine", 220, 0.5)
    noise = np.random.default_rng(1).standard_normal(len(clip)).astype(np.float32)
    assert si_snr(clip, 3.0 * clip) > 80  # scale-invariant
    assert abs(si_snr(clip, clip + 0.05 * noise) - 17.0) < 0.5  # 0.125 / 0.0025 = 17 dB
    assert mel_distance(clip, clip) == 0.0
    assert 0 < mel_distance(clip, clip + 0.01 * noise) < mel_distance(clip, clip + 0.1 * noise)


def test_wav_round_trip_and_resampling():
    clip = tone("square", 330, 0.25)
    back = read_wav(wav_bytes(clip))
    assert np.abs(back - clip).max() < 1e-3
    up = read_wav(wav_bytes(tone("sine", 440, 0.25, 48_000), 48_000))
    assert len(up) == len(clip) and semitones(estimate_pitch(up), 440) < 0.1
    assert len(pcm16(clip)) == 2 * len(clip)


@pytest.mark.parametrize(
    ("data", "kwargs", "match"),
    [
        (b"RIFF not really a wav", {}, "prompt.audio: not a readable"),
        (wav_bytes(tone("sine", 440, 0.1, 11_025), 11_025), {}, "11025 Hz is not supported"),
        (wav_bytes(tone("sine", 440, 2.0)), {"max_seconds": 1.0}, "longer than the limit"),
    ],
)
def test_bad_wav_names_the_field(data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        read_wav(data, field="prompt.audio", **kwargs)


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")
def test_speech_is_deterministic_and_voiced():
    a, b = speech_clips(2, seed=5), speech_clips(2, seed=5)
    for (x, text, _), (y, _, _) in zip(a, b):
        assert text and np.array_equal(x, y)
        assert 0.5 * SAMPLE_RATE < len(x) < 8 * SAMPLE_RATE and 0.05 < np.abs(x).max() <= 1.0
