"""Audio for the audio tokenizers and the model: espeak-ng speech, captioned tones, WAV I/O.

Everything is offline and deterministic from a seed:

* speech: sentences built from a small word list, spoken by Debian's `espeak-ng`
  (installed by the set-up) with voice variants; the voices in `HELDOUT_VOICES` are never
  trained on and serve the cards' round-trip figures (`speech_clips`);
* tones: "a {waveform} tone at {frequency} Hz" for sine, square and sawtooth waves between
  110 and 880 Hz (`tone_clips`; `tone` renders one).

Clips are float32 numpy arrays at `SAMPLE_RATE`, in [-1, 1]. `read_wav` is the one place
user audio comes in: it refuses corrupt bytes, unsupported rates and over-long clips with
a ValueError that names the field.
"""

from __future__ import annotations

import hashlib
import io
import math
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
WAVEFORMS = ("sine", "square", "sawtooth")
MIN_FREQUENCY, MAX_FREQUENCY = 110, 880
# Rates a user's WAV may have; others are refused rather than silently resampled badly.
SUPPORTED_RATES = (8_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000)

# espeak-ng voices (language + variant). Training never hears the held-out ones.
TRAIN_VOICES = (
    "en-us",
    "en-us+m3",
    "en-us+f2",
    "en+m1",
    "en+f3",
    "en-gb-x-rp",
    "en-gb-x-rp+m5",
    "en-029+f1",
    "en-sc+m2",
    "en-us+klatt",
)
HELDOUT_VOICES = ("en+f4", "en-gb-x-gbclan+m4", "en-us+f5")

_WORDS = tuple(
    (  # noqa: SIM905 - one readable paragraph
        "the quick brown fox jumps over a lazy dog while seven small birds sing "
        "under green trees near the river bank today we measure every sound and "
        "learn how signals carry meaning across time a model listens then speaks "
        "numbers like one two three four five six eight nine ten echo softly "
        "morning light falls on old stone walls and warm wind moves the tall grass"
    ).split()
)


def caption(waveform: str, frequency: int) -> str:
    """The exact caption form of a tone clip."""
    return f"a {waveform} tone at {frequency} Hz"


def tone(
    waveform: str,
    frequency: float,
    seconds: float,
    sample_rate: int = SAMPLE_RATE,
    amplitude: float = 0.5,
    phase: float = 0.0,
) -> np.ndarray:
    """A band-limited-enough tone: sine, square or sawtooth (naive, amplitude-scaled)."""
    if waveform not in WAVEFORMS:
        raise ValueError(f"waveform must be one of {WAVEFORMS}, got {waveform!r}")
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    cycles = frequency * t + phase / (2 * math.pi)
    if waveform == "sine":
        x = np.sin(2 * math.pi * cycles)
    elif waveform == "square":
        x = np.sign(np.sin(2 * math.pi * cycles))
    else:
        x = 2 * (cycles - np.floor(cycles + 0.5))
    return (amplitude * x).astype(np.float32)


def random_tone(rng: np.random.Generator, octaves: float = 3.0) -> tuple[str, int]:
    """A waveform and an integer frequency, log-uniform over 110-880 Hz (every octave
    equally often, as pitch is heard); `octaves` < 3 keeps the lowest ones only."""
    waveform = WAVEFORMS[int(rng.integers(len(WAVEFORMS)))]
    frequency = int(round(MIN_FREQUENCY * 2 ** rng.uniform(0, octaves)))
    return waveform, min(max(frequency, MIN_FREQUENCY), MAX_FREQUENCY)


def tone_clips(
    n: int, seed: int, seconds: float = 1.0, sample_rate: int = SAMPLE_RATE, octaves: float = 3.0
) -> list[tuple[np.ndarray, str, int]]:
    """`n` random (clip, caption, frequency): waveform, integer frequency (`random_tone`),
    amplitude, phase."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        waveform, frequency = random_tone(rng, octaves)
        amplitude = float(rng.uniform(0.3, 0.7))
        phase = float(rng.uniform(0, 2 * math.pi))
        clip = tone(waveform, frequency, seconds, sample_rate, amplitude, phase)
        out.append((clip, caption(waveform, frequency), frequency))
    return out


def sentence(rng: np.random.Generator, words: tuple[int, int] = (4, 10)) -> str:
    count = int(rng.integers(words[0], words[1] + 1))
    return " ".join(_WORDS[int(i)] for i in rng.integers(len(_WORDS), size=count))


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, voice: str = "en-us", speed: int = 160, pitch: int = 50) -> np.ndarray:
    """`text` spoken by espeak-ng, at SAMPLE_RATE (float32). Cached on disk by content."""
    key = hashlib.sha1(f"{voice}|{speed}|{pitch}|{text}".encode()).hexdigest()
    cache = _cache_dir() / f"{key}.npy"
    if cache.is_file():
        return np.load(cache, allow_pickle=False)
    if not espeak_available():
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text]
    wav = subprocess.run(cmd, capture_output=True, check=True).stdout
    clip = read_wav(wav, field="espeak-ng output", max_seconds=600.0)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, clip, allow_pickle=False)
    return clip


def speech_clips(
    n: int,
    seed: int,
    voices: tuple[str, ...] = TRAIN_VOICES,
    words: tuple[int, int] = (4, 10),
) -> list[tuple[np.ndarray, str, str]]:
    """`n` (clip, text, voice): random sentences (`words` long), voices, speeds and pitches."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        text = sentence(rng, words)
        voice = voices[int(rng.integers(len(voices)))]
        speed, pitch = int(rng.integers(130, 200)), int(rng.integers(30, 71))
        out.append((speak(text, voice, speed, pitch), text, voice))
    return out


def heldout_speech(n: int = 24) -> list[np.ndarray]:
    """Fixed clips of the held-out voices (never trained on), for the tokenizer cards."""
    return [clip for clip, _, _ in speech_clips(n, 424_242, HELDOUT_VOICES)]


def random_crop(clip: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A `length`-sample crop (zero-padded when the clip is shorter)."""
    if len(clip) <= length:
        return np.pad(clip, (0, length - len(clip)))
    start = int(rng.integers(len(clip) - length + 1))
    return clip[start : start + length]


# -- WAV I/O -------------------------------------------------------------------------


def read_wav(
    data: bytes | str | Path,
    field: str = "audio",
    sample_rate: int = SAMPLE_RATE,
    max_seconds: float | None = None,
) -> np.ndarray:
    """WAV/FLAC bytes or a path -> mono float32 at `sample_rate`.

    ValueError naming `field` for bytes that are not audio, an unsupported rate, an empty
    clip or one longer than `max_seconds`.
    """
    import soundfile as sf

    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else str(data)
    try:
        clip, rate = sf.read(source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise ValueError(f"{field}: not a readable WAV/FLAC file ({err})") from None
    if rate not in SUPPORTED_RATES:
        raise ValueError(f"{field}: sample rate {rate} Hz is not supported ({SUPPORTED_RATES})")
    if clip.shape[0] == 0:
        raise ValueError(f"{field}: the clip is empty")
    seconds = clip.shape[0] / rate
    if max_seconds is not None and seconds > max_seconds:
        raise ValueError(f"{field}: {seconds:.1f} s is longer than the limit of {max_seconds} s")
    return resample(clip.mean(axis=1), rate, sample_rate)


def wav_bytes(clip: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """A float clip in [-1, 1] as 16-bit PCM WAV bytes."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(clip, -1, 1), sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def resample(clip: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling (scipy) from `rate` to `target` Hz; float32."""
    if rate == target:
        return np.ascontiguousarray(clip, dtype=np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(rate, target)
    return resample_poly(clip, target // g, rate // g).astype(np.float32)


@lru_cache(maxsize=1)
def _cache_dir() -> Path:
    """Synthesised speech is cached under ~/.cache/mmntp/espeak (it is slow to make)."""
    return Path.home() / ".cache" / "mmntp" / "espeak"
