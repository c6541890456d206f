"""Where `generate` writes: the output format follows `-o`'s extension, or it is refused.

The bytes come from `mmntp.client.save` (the SDK's writers); this module only picks the
format, checks it fits the modality and sends the bytes to a file or to stdout (`-o -`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

# The modality an extension implies when --modality is not given.
MODALITY_OF_SUFFIX = {".png": "image", ".jpg": "image", ".jpeg": "image", ".wav": "audio"}
FORMATS = {
    "text": {".txt": "text", ".json": "json", "": "text"},
    "tokens": {".txt": "text", ".json": "json", "": "text"},
    "timeseries": {".csv": "csv", ".json": "json"},
    "image": {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"},
    "audio": {".wav": "wav"},
}
BINARY = frozenset({"png", "jpeg", "wav"})
STDOUT_FORMAT = {"text": "text", "tokens": "text", "timeseries": "csv", "image": "png"}


@dataclass(frozen=True)
class Target:
    """Where the result goes: a path, or stdout (`path` None); `format` from its suffix."""

    path: Path | None
    format: str

    @property
    def name(self) -> str:
        return "stdout" if self.path is None else str(self.path)


def infer_modality(output: str | None, context: bool, prompt_ids: bool) -> str:
    """--modality when not given: from --context / --prompt-ids, else -o's extension."""
    if context:
        return "timeseries"
    if prompt_ids:
        return "tokens"
    suffix = Path(output).suffix.lower() if output and output != "-" else ""
    return MODALITY_OF_SUFFIX.get(suffix, "text")


def output_target(modality: str, output: str | None, as_json: bool = False) -> Target | None:
    """The Target for `-o` (None: no file, results on stdout as before), or ValueError."""
    if output is None:
        return None
    if output == "-":
        fmt = "json" if as_json and modality in ("text", "tokens", "timeseries") else None
        fmt = fmt or STDOUT_FORMAT.get(modality, "wav")
        if fmt in BINARY and sys.stdout.isatty():
            raise ValueError(f"-o - would write {fmt.upper()} bytes to a terminal; redirect it")
        return Target(None, fmt)
    suffix = Path(output).suffix.lower()
    formats = FORMATS[modality]
    if suffix in formats:
        return Target(Path(output), formats[suffix])
    if modality in ("text", "tokens") and suffix not in _KNOWN_OTHER:
        return Target(Path(output), "text")
    wanted = ", ".join(s for s in formats if s)
    hint = ""
    if suffix in MODALITY_OF_SUFFIX:
        hint = f" (for {MODALITY_OF_SUFFIX[suffix]}, pass --modality {MODALITY_OF_SUFFIX[suffix]})"
    raise ValueError(
        f"-o {output}: {modality} output is written as {wanted}, not {suffix or 'a file without extension'}{hint}"
    )


_KNOWN_OTHER = frozenset({*MODALITY_OF_SUFFIX, ".csv", ".gif", ".webp", ".bmp", ".flac", ".mp3"})


def write_bytes(target: Target, data: bytes) -> None:
    if target.path is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        target.path.write_bytes(data)


def write_text(target: Target | None, text: str) -> None:
    """A line of text to the target, or to stdout when there is none."""
    if target is None or target.path is None:
        print(text, flush=True)
    else:
        target.path.write_text(text + "\n")


def write_json(target: Target | None, payload: dict) -> None:
    write_text(target, json.dumps(payload))


def note(message: str) -> None:
    """Progress and 'wrote ...' lines: stderr, so stdout stays the result."""
    print(message, file=sys.stderr)
