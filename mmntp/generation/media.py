"""Checks of media prompt parts (image, audio, motion bytes) in bounded time; each raises
FieldError relative to the part ("image", "audio.wav", "motion.values[3]")."""

from __future__ import annotations

import io
import warnings

import numpy as np

from mmntp.api import AudioPart, FieldError, ImagePart, Limits, MotionPart
from mmntp.data.audio import SUPPORTED_RATES


def check_image(part: ImagePart, limits: Limits) -> None:
    """The bytes are a decodable PNG or JPEG within max_image_pixels."""
    from PIL import Image, UnidentifiedImageError

    field = "image"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(part.data))
    except Image.DecompressionBombError:
        raise FieldError(
            field, f"the image exceeds max_image_pixels {limits.max_image_pixels}"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise FieldError(field, "not a PNG or JPEG image") from None
    with img:
        if img.format not in ("PNG", "JPEG"):
            raise FieldError(field, f"not a PNG or JPEG image (got {img.format})")
        width, height = img.size
        if width * height > limits.max_image_pixels:
            raise FieldError(
                field,
                f"{width}x{height} = {width * height} pixels exceeds max_image_pixels "
                f"{limits.max_image_pixels}",
            )
        try:
            img.load()
        except (OSError, ValueError, SyntaxError) as err:
            raise FieldError(field, f"corrupt {img.format} image: {err}") from None


def _rates() -> str:
    return ", ".join(map(str, SUPPORTED_RATES))


def check_audio(part: AudioPart, limits: Limits) -> None:
    """A decodable WAV file, or 16-bit PCM with a sample rate; within max_audio_seconds."""
    if part.pcm is not None:
        if part.sample_rate not in SUPPORTED_RATES:
            raise FieldError(
                "audio.pcm.sample_rate", f"{part.sample_rate} Hz is not supported ({_rates()})"
            )
        if not part.pcm or len(part.pcm) % 2:
            raise FieldError(
                "audio.pcm.data",
                "must hold 16-bit samples (a positive even number of bytes), "
                f"got {len(part.pcm)} bytes",
            )
        seconds = len(part.pcm) / 2 / part.sample_rate
    else:
        seconds = _wav_seconds(part.wav or b"", limits)
    if seconds > limits.max_audio_seconds:
        raise FieldError(
            "audio", f"{seconds:.2f} s exceeds max_audio_seconds {limits.max_audio_seconds:g}"
        )


def _wav_seconds(wav: bytes, limits: Limits) -> float:
    import soundfile

    field = "audio.wav"
    try:
        with soundfile.SoundFile(io.BytesIO(wav)) as f:
            if f.format not in ("WAV", "WAVEX"):
                raise FieldError(field, f"not a WAV file (got {f.format})")
            if f.samplerate not in SUPPORTED_RATES:
                raise FieldError(
                    field, f"sample rate {f.samplerate} Hz is not supported ({_rates()})"
                )
            seconds = f.frames / f.samplerate
            if seconds <= limits.max_audio_seconds:
                f.read(dtype="float32")  # decodes every frame: catches a truncated file
    except FieldError:
        raise
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError):
        raise FieldError(field, "not a WAV file") from None
    if seconds == 0:
        raise FieldError(field, "the file holds no samples")
    return seconds


def check_motion(part: MotionPart) -> None:
    """(frames, features) finite values."""
    values = np.asarray(part.values, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(values.reshape(-1)))
    if bad.size:
        j = int(bad[0])
        raise FieldError(
            f"motion.values[{j}]", f"{values.reshape(-1)[j]!r} is not finite (NaN/inf)"
        )
