"""Test helper: a real mmntp gRPC server in a background thread, and polling."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from mmntp.serve.thread import ServerThread  # noqa: F401 - the tests' import surface

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SERVICE = ROOT / "services" / "default"


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll `predicate` until it holds; fail the test after `timeout` seconds."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.01)
