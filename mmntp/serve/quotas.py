"""Admission per API key: server-defined priority levels, concurrency and rate quotas.

The keys file (serve/auth.py) stays a plain list of secrets. What each key may do lives in
an optional JSON policies file, named by `$MMNTP_KEY_POLICIES` (see docs/operations.md,
"Limits and admission"); it names keys by their id, never by the secret:

    {
      "idle_stream_seconds": 30,
      "retry_after_seconds": 1.0,
      "default": {"priority": 0, "max_concurrent": 0, "rate": 0},
      "keys": {
        "k-3b5d5c3712955042": {"priority": -1, "max_concurrent": 16},
        "k-2e7d2c03a9507ae2": {"priority": 1, "max_concurrent": 4, "rate": 2, "burst": 4}
      }
    }

A key's id is `key_id(KEY)`: "k-" and the first 16 hex digits of its SHA-256 (the same id
the request log and the fairness scheduler use). `priority`: lower runs first (the
client's `priority` field is ignored); `max_concurrent`: Generate calls in flight at once
(0: unlimited); `rate`: calls per second refilling a token bucket of `burst` calls (0:
unlimited; burst defaults to max(1, rate)). A call over a quota is RESOURCE_EXHAUSTED
with the limit in its message and a RetryInfo in its status details.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_VAR = "MMNTP_KEY_POLICIES"
ANONYMOUS = "anonymous"  # the owner of calls without a key (a server with no keys)


def key_id(key: str | None) -> str:
    """A short, non-reversible id of an API key for logs, metrics and the policies file."""
    if not key:
        return ANONYMOUS
    return "k-" + hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class KeyPolicy:
    """What one API key may do (see the module docstring)."""

    priority: int = 0
    max_concurrent: int = 0
    rate: float = 0.0
    burst: int = 0

    def __post_init__(self) -> None:
        for name in ("priority", "max_concurrent", "burst"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if not -(2**31) <= self.priority < 2**31:
            raise ValueError(f"priority must fit in 32 bits, got {self.priority}")
        if self.max_concurrent < 0 or self.burst < 0:
            raise ValueError("max_concurrent and burst must be >= 0")
        rate = self.rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate >= 0:
            raise ValueError(f"rate must be a number >= 0, got {rate!r}")
        if not math.isfinite(rate):
            raise ValueError(f"rate must be finite, got {rate!r}")

    @property
    def bucket_size(self) -> float:
        return float(self.burst or max(1, math.ceil(self.rate)))

    @classmethod
    def from_dict(cls, data: Any, where: str) -> KeyPolicy:
        if not isinstance(data, dict):
            raise ValueError(f"{where}: must be an object, got {type(data).__name__}")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"{where}: unknown settings {sorted(unknown)}")
        try:
            return cls(**data)
        except ValueError as err:
            raise ValueError(f"{where}.{err}") from None


@dataclass(frozen=True)
class AdmissionConfig:
    """The policies file: the default policy, per-key policies, stream and retry timing."""

    default: KeyPolicy = field(default_factory=KeyPolicy)
    keys: dict[str, KeyPolicy] = field(default_factory=dict)  # key id -> policy
    idle_stream_seconds: float = 30.0  # a stream whose client reads nothing this long ends
    retry_after_seconds: float = 1.0  # the RetryInfo hint of a full queue or busy key

    def __post_init__(self) -> None:
        for name in ("idle_stream_seconds", "retry_after_seconds"):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok or not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")

    def policy(self, owner: str) -> KeyPolicy:
        return self.keys.get(owner, self.default)

    @classmethod
    def from_dict(cls, data: Any, where: str = "key policies") -> AdmissionConfig:
        if not isinstance(data, dict):
            raise ValueError(f"{where}: must be a JSON object")
        unknown = set(data) - {"default", "keys", "idle_stream_seconds", "retry_after_seconds"}
        if unknown:
            raise ValueError(f"{where}: unknown settings {sorted(unknown)}")
        keys = data.get("keys", {})
        if not isinstance(keys, dict):
            raise ValueError(f"{where}: keys must be an object of key id -> policy")
        for name in keys:
            if not (name.startswith("k-") and len(name) == 18):
                raise ValueError(
                    f"{where}: keys.{name[:4]}... is not a key id: name keys by key_id(KEY) "
                    "(k- and 16 hex digits), never by the key itself"
                )
        timing = {k: data[k] for k in ("idle_stream_seconds", "retry_after_seconds") if k in data}
        return cls(
            default=KeyPolicy.from_dict(data.get("default", {}), f"{where}: default"),
            keys={k: KeyPolicy.from_dict(v, f"{where}: keys.{k}") for k, v in keys.items()},
            **timing,
        )

    @classmethod
    def load(cls, path: str | Path) -> AdmissionConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"key policies {path}: {err}") from None
        return cls.from_dict(data, f"key policies {path}")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> AdmissionConfig:
        """From the file named by $MMNTP_KEY_POLICIES, else the defaults."""
        path = (os.environ if env is None else env).get(ENV_VAR, "").strip()
        return cls.load(path) if path else cls()


class QuotaExceeded(Exception):
    """A call over its key's quota: RESOURCE_EXHAUSTED, retry after `retry_after` s."""

    def __init__(self, message: str, reason: str, retry_after: float) -> None:
        super().__init__(message)
        self.reason, self.retry_after = reason, retry_after


@dataclass
class _KeyState:
    in_flight: int = 0
    tokens: float = 0.0
    refilled: float = 0.0


class Admission:
    """Per-key concurrency and token-bucket rate quotas (one event loop: no locks)."""

    def __init__(self, config: AdmissionConfig, clock=time.monotonic) -> None:
        self.config, self.clock = config, clock
        self._state: dict[str, _KeyState] = {}

    def admit(self, owner: str) -> KeyPolicy:
        """Take a slot for one call of `owner` (release it with `release`), or raise."""
        policy = self.config.policy(owner)
        state = self._state.get(owner)
        if state is None:
            state = self._state[owner] = _KeyState(tokens=policy.bucket_size, refilled=self.clock())
        if policy.max_concurrent and state.in_flight >= policy.max_concurrent:
            raise QuotaExceeded(
                f"key {owner} has {state.in_flight} calls in flight "
                f"(max_concurrent={policy.max_concurrent})",
                "concurrency",
                self.config.retry_after_seconds,
            )
        if policy.rate:
            now = self.clock()
            elapsed = max(0.0, now - state.refilled)
            state.tokens = min(policy.bucket_size, state.tokens + elapsed * policy.rate)
            state.refilled = now
            if state.tokens < 1.0:
                raise QuotaExceeded(
                    f"key {owner} is over its rate (rate={policy.rate:g}/s, "
                    f"burst={policy.bucket_size:g})",
                    "rate",
                    (1.0 - state.tokens) / policy.rate,
                )
            state.tokens -= 1.0
        state.in_flight += 1
        return policy

    def release(self, owner: str) -> None:
        state = self._state.get(owner)
        if state is not None and state.in_flight > 0:
            state.in_flight -= 1

    def in_flight(self, owner: str) -> int:
        state = self._state.get(owner)
        return 0 if state is None else state.in_flight
