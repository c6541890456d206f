"""Saving what a stream produced: PNG, WAV and forecast CSV, as the local CLI writes them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mmntp.api import AudioChunk, Chunk, ForecastResult, ImageChunk
from mmntp.api.series_io import write_forecast_csv


def save_png(chunks_or_bytes: bytes | Iterable[Chunk], path: str | Path) -> Path:
    """Write PNG bytes, or the final ImageChunk of a stream (else its last preview)."""
    if isinstance(chunks_or_bytes, bytes | bytearray):
        data = bytes(chunks_or_bytes)
    else:
        images = [c for c in chunks_or_bytes if isinstance(c, ImageChunk)]
        if not images:
            raise ValueError("save_png: no ImageChunk in the stream")
        finals = [c for c in images if c.final]
        data = (finals or images)[-1].png
    path = Path(path)
    path.write_bytes(data)
    return path


def save_wav(audio_chunks: Iterable[Chunk], path: str | Path) -> Path:
    """Write the AudioChunks of a stream (in first_sample order) as 16-bit PCM WAV."""
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
    path = Path(path)
    soundfile.write(path, samples, rates.pop(), subtype="PCM_16", format="WAV")
    return path


def save_forecast_csv(
    result: ForecastResult, path: str | Path, timestamps: list[str] | None = None
) -> Path:
    """Write a forecast as `mmntp generate -o` does: `[timestamp,]median,q0.1,...`."""
    write_forecast_csv(path, result.median, result.quantiles, timestamps)
    return Path(path)
