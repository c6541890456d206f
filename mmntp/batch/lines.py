"""Batch input lines: `{"custom_id": str, "request": {...}}`, one JSON object a line.

Two passes over the input, both streamed (never the whole file in memory):

- `check_input` (the pre-pass) refuses the batch before any work with `BatchRefused`
  naming the line: a line that is not a JSON object, a missing or non-string
  `custom_id`, a `custom_id` given twice (both lines). It keeps only the ids (and their
  line numbers) and the input's sha256, never the requests.
- `read_lines` yields each `InputLine` again for the run; `parse_request` maps its
  `request` to api objects through the fields the CLI shares (`mmntp.api.fields`). A bad
  request there is a `FieldError` naming the field: an error line, the batch goes on.

Blank lines are skipped; line numbers count every physical line from 1.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mmntp.api import FieldError
from mmntp.api.fields import FieldRequest, request_from_fields


class BatchRefused(ValueError):
    """The input cannot run at all (a line that is not JSON, a missing or duplicate
    custom_id, another input in the same folder); the message is one line."""


@dataclass(frozen=True)
class InputLine:
    number: int  # 1-based physical line
    custom_id: str
    request: Any  # the line's "request" value, as parsed (checked by parse_request)


@dataclass(frozen=True)
class InputCheck:
    """What the pre-pass keeps: each custom_id's line number and the input's sha256."""

    ids: dict[str, int]
    sha256: str


def numbered(raw_lines: Iterable[bytes | str]) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of each non-blank line."""
    for number, raw in enumerate(raw_lines, start=1):
        data = raw.encode() if isinstance(raw, str) else raw
        if data.strip():
            yield number, data


def parse_line(number: int, data: bytes | str) -> InputLine:
    """One line as an InputLine; BatchRefused names the line if it cannot be one."""
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BatchRefused(f"line {number}: not valid JSON ({err})") from None
    if not isinstance(obj, dict):
        raise BatchRefused(f"line {number}: must be a JSON object, got {type(obj).__name__}")
    custom_id = obj.get("custom_id")
    if custom_id is None:
        raise BatchRefused(f"line {number}: custom_id is missing")
    if not isinstance(custom_id, str) or not custom_id:
        raise BatchRefused(f"line {number}: custom_id must be a non-empty string")
    return InputLine(number, custom_id, obj.get("request"))


def check_lines(raw_lines: Iterable[bytes | str]) -> InputCheck:
    """The pre-pass over any iterable of lines (a file opened in binary, a stream of
    lines from a client): refuses the batch (BatchRefused) or returns its ids."""
    digest, ids = hashlib.sha256(), {}
    for number, raw in enumerate(raw_lines, start=1):
        data = raw.encode() if isinstance(raw, str) else raw
        digest.update(data)
        if not data.strip():
            continue
        line = parse_line(number, data)
        first = ids.setdefault(line.custom_id, number)
        if first != number:
            raise BatchRefused(
                f"line {number}: custom_id {line.custom_id!r} duplicates line {first}"
            )
    if not ids:
        raise BatchRefused("the input has no request lines")
    return InputCheck(ids, digest.hexdigest())


def check_input(path: str | Path) -> InputCheck:
    """`check_lines` over a JSONL file, streamed."""
    with open(path, "rb") as f:
        return check_lines(f)


def read_lines(path: str | Path) -> Iterator[InputLine]:
    """Each request line of a file checked by `check_input`, streamed."""
    with open(path, "rb") as f:
        for number, data in numbered(f):
            yield parse_line(number, data)


def parse_request(request: Any, custom_id: str) -> FieldRequest:
    """A line's `request` as api objects (FieldError naming the field); a request
    without a seed gets `default_seed(custom_id)`, so a rerun draws the same results."""
    if not isinstance(request, dict):
        raise FieldError("request", f"must be a JSON object, got {type(request).__name__}")
    parsed = request_from_fields(request)
    if parsed.sampling.seed is None:
        parsed.sampling = replace(parsed.sampling, seed=default_seed(custom_id))
    return parsed


def default_seed(custom_id: str) -> int:
    """The seed of a request that names none: the first 4 bytes of
    sha256("mmntp-batch:" + custom_id), big-endian (0 .. 2**32 - 1)."""
    digest = hashlib.sha256(f"mmntp-batch:{custom_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big")
