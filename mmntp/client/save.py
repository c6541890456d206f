"""Saving what a stream produced: PNG/JPEG, WAV and forecast CSV/JSON — the one set of
writers the SDK and the `mmntp` command line share.

Each format has a `*_bytes` / `*_text` form (for stdout or a buffer) and a `save_*` form
that writes a file.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mmntp.api import AudioChunk, Chunk, ForecastResult, ImageChunk
from mmntp.api.series_io import write_forecast_csv

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def image_bytes(chunks_or_bytes: bytes | Iterable[Chunk], format: str = "PNG") -> bytes:
    """The final ImageChunk of a stream (else its last preview), or PNG bytes, encoded as
    `format` ("PNG" as sent, or "JPEG" re-encoded with Pillow)."""
    if isinstance(chunks_or_bytes, bytes | bytearray):
        data = bytes(chunks_or_bytes)
    else:
        images = [c for c in chunks_or_bytes if isinstance(c, ImageChunk)]
        if not images:
            raise ValueError("save_png: no ImageChunk in the stream")
        finals = [c for c in images if c.final]
        data = (finals or images)[-1].png
    if format.upper() == "PNG":
        return data
    from PIL import Image

    buf = io.BytesIO()
    with Image.open(io.BytesIO(data)) as image:
        image.convert("RGB").save(buf, format=format.upper(), quality=95)
    return buf.getvalue()


def save_image(chunks_or_bytes: bytes | Iterable[Chunk], path: str | Path) -> Path:
    """Write an image in the format its suffix names (.png, .jpg / .jpeg)."""
    path = Path(path)
    fmt = IMAGE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: an image is written as .png, .jpg or .jpeg")
    path.write_bytes(image_bytes(chunks_or_bytes, fmt))
    return path


def save_png(chunks_or_bytes: bytes | Iterable[Chunk], path: str | Path) -> Path:
    """Write PNG bytes, or the final ImageChunk of a stream (else its last preview)."""
    path = Path(path)
    path.write_bytes(image_bytes(chunks_or_bytes))
    return path


def wav_bytes(audio_chunks: Iterable[Chunk]) -> bytes:
    """The AudioChunks of a stream (in first_sample order) as 16-bit PCM WAV bytes."""
    import soundfile

    chunks = sorted(
        (c for c in audio_chunks if isinstance(c, AudioChunk)), key=lambda c: c.first_sample
    )
    if not chunks:
        raise ValueError("save_wav: no AudioChunk in the stream")
    rates = {c.sample_rate for c in chunks}
    if len(rates) != 1:
        raise ValueError(f"save_wav: chunks have different sample rates {sorted(rates)}")
    expected = chunks[0].first_sample
    for c in chunks:
        if c.first_sample != expected:
            raise ValueError(
                f"save_wav: chunk at sample {c.first_sample} does not follow sample {expected}"
            )
        expected += len(c.samples)
    pcm = b"".join(c.pcm16() for c in chunks)
    samples = np.frombuffer(pcm, dtype="<i2")  # samples: [num_samples], exactly the wire's
    buf = io.BytesIO()
    soundfile.write(buf, samples, rates.pop(), subtype="PCM_16", format="WAV")
    return buf.getvalue()


def save_wav(audio_chunks: Iterable[Chunk], path: str | Path) -> Path:
    """Write the AudioChunks of a stream (in first_sample order) as 16-bit PCM WAV."""
    path = Path(path)
    path.write_bytes(wav_bytes(audio_chunks))
    return path


def forecast_csv_text(result: ForecastResult, timestamps: list[str] | None = None) -> str:
    """A forecast as `[timestamp,]median,q0.1,...` CSV text."""
    buf = io.StringIO()
    write_forecast_csv(buf, result.median, result.quantiles, timestamps)
    return buf.getvalue()


def save_forecast_csv(
    result: ForecastResult, path: str | Path, timestamps: list[str] | None = None
) -> Path:
    """Write a forecast as `mmntp generate -o x.csv` does: `[timestamp,]median,q0.1,...`."""
    write_forecast_csv(path, result.median, result.quantiles, timestamps)
    return Path(path)


def forecast_json(result: ForecastResult, timestamps: list[str] | None = None) -> dict:
    """A forecast as a JSON-ready dict: median, quantiles by level ("0.1": [...]) and,
    when known, one timestamp per step."""
    payload: dict = {"median": result.median.tolist()}
    payload["quantiles"] = {f"{q:g}": v.tolist() for q, v in sorted(result.quantiles.items())}
    if timestamps is not None:
        payload["timestamps"] = list(timestamps)
    return payload


def save_forecast_json(
    result: ForecastResult, path: str | Path, timestamps: list[str] | None = None
) -> Path:
    """Write `forecast_json` to a file (as `mmntp generate -o x.json` does)."""
    path = Path(path)
    path.write_text(json.dumps(forecast_json(result, timestamps)) + "\n")
    return path
