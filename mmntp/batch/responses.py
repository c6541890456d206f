"""A request's stream of api chunks -> its response JSON (and its file, for media).

Both backends stream the same chunk types (the local pipeline and the SDK), so one
collector makes the response of either: a forecast holds `median` and `quantiles`
(`{"0.1": [...], ...}`), text `text`, raw tokens `token_ids` and `logprobs`; an image
(PNG), audio (WAV) or motion (.npy, float32 (frames, features)) is written under
`DIR/files/` and the response names it relative to DIR in `file`. Every response has
`finish_reason` and `usage` (prompt and output tokens).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from mmntp.api import (
    AudioChunk,
    Final,
    GenerationOutput,
    ImageChunk,
    MotionChunk,
    SeriesChunk,
    TextChunk,
    TokensChunk,
)
from mmntp.client.messages import ForecastCollector
from mmntp.client.save import forecast_json, image_bytes, wav_bytes

FILES_DIR = "files"
MEDIA_EXT = {"image": "png", "audio": "wav", "motion": "npy"}
_SAFE = re.compile(r"[A-Za-z0-9_-]")
_MAX_NAME = 120


def file_stem(custom_id: str) -> str:
    """A file name for `custom_id`, distinct for distinct ids: every character outside
    [A-Za-z0-9_-] becomes %XX per UTF-8 byte (so no '.', '/' or hidden names); a result
    longer than 120 characters becomes '=' + the id's sha256 ('=' never survives the
    escaping, so the two forms cannot meet)."""
    escaped = "".join(
        c if _SAFE.fullmatch(c) else "".join(f"%{b:02X}" for b in c.encode()) for c in custom_id
    )
    if len(escaped) <= _MAX_NAME:
        return escaped
    return "=" + hashlib.sha256(custom_id.encode()).hexdigest()


class ResponseCollector:
    """Feed it a request's chunks (`add`), then ask for the response (`response`)."""

    def __init__(self, modality: str) -> None:
        self.modality = modality
        self.chunks: list[Any] = []
        self.forecast = ForecastCollector()
        self.finish_reason = "unspecified"
        self.usage = {"prompt_tokens": 0, "output_tokens": 0}

    def add(self, chunk: Any) -> None:
        if isinstance(chunk, SeriesChunk):
            self.forecast.add(chunk)
        elif isinstance(chunk, Final | GenerationOutput):
            self.finish_reason = chunk.finish_reason
            self.usage = {
                "prompt_tokens": int(chunk.prompt_tokens),
                "output_tokens": int(chunk.output_tokens),
            }
        elif isinstance(chunk, TextChunk | TokensChunk | ImageChunk | AudioChunk | MotionChunk):
            self.chunks.append(chunk)

    def response(self, directory: Path, custom_id: str) -> dict[str, Any]:
        """The response JSON, its media file (if any) written under `directory` first."""
        body, data = self.result(custom_id)
        save_media(directory, body.get("file"), data)
        return body

    def result(self, custom_id: str) -> tuple[dict[str, Any], bytes | None]:
        """(the response JSON, the media file's bytes or None). The file is not written
        here, so that a Ray actor can send it to the driver: `save_media` writes it."""
        body: dict[str, Any]
        data = None
        if self.modality == "timeseries":
            body = forecast_json(self.forecast.result())
        elif self.modality == "text":
            body = {"text": "".join(c.text for c in self.chunks if isinstance(c, TextChunk))}
        elif self.modality == "tokens":
            toks = [c for c in self.chunks if isinstance(c, TokensChunk)]
            body = {
                "token_ids": [i for c in toks for i in c.ids],
                "logprobs": [float(p) for c in toks for p in c.logprobs],
            }
        else:
            body, data = self._media(custom_id)
        body["finish_reason"] = self.finish_reason
        body["usage"] = dict(self.usage)
        return body, data

    def _media(self, custom_id: str) -> tuple[dict[str, Any], bytes]:
        body: dict[str, Any] = {"file": media_path(custom_id, self.modality)}
        if self.modality == "image":
            return body, image_bytes(self.chunks)
        if self.modality == "audio":
            audio = [c for c in self.chunks if isinstance(c, AudioChunk)]
            body["seconds"] = sum(len(c.samples) for c in audio) / audio[0].sample_rate
            return body, wav_bytes(audio)
        frames = sorted(
            (c for c in self.chunks if isinstance(c, MotionChunk)), key=lambda c: c.first_frame
        )
        values = np.concatenate([c.values for c in frames]).astype(np.float32)
        buf = io.BytesIO()
        np.save(buf, values, allow_pickle=False)  # values: [frames, features]
        return body, buf.getvalue()


def media_path(custom_id: str, modality: str) -> str:
    """Where a media result goes, relative to the batch folder."""
    return f"{FILES_DIR}/{file_stem(custom_id)}.{MEDIA_EXT[modality]}"


def save_media(directory: Path, relative: str | None, data: bytes | None) -> None:
    """Write a result's file (if it has one) at `relative` (its response's `file`)."""
    if relative is not None and data is not None:
        write_atomically(Path(directory) / relative, data)


def write_atomically(path: Path, data: bytes) -> None:
    """`data` at `path` whole or not at all (temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
