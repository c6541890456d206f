"""API-key authentication: metadata `authorization: Bearer KEY`, checked in an interceptor.

Keys come from `--api-keys-file` (one per line; blank lines and lines starting with `#`
are skipped) or else the environment variable MMNTP_API_KEYS (comma-separated).

Fails closed: a keys file without a key, or MMNTP_API_KEYS set but holding no key (`" , "`),
is an error unless `allow_empty` (`mmntp serve --allow-unauthenticated`) says an open server
is meant. With no key source at all the server only starts open on a loopback address
(serve/server.py checks the bind address). Refused calls are counted
(`mmntp_auth_failures_total{reason}`) and logged at most once per `log_every` seconds,
with their count and method, never the key that was sent.

What is protected: every method of `mmntp.v1.GenerationService` and `mmntp.v1.BatchService`. The health service
stays open so that load balancers and orchestrators can probe without a secret, and
reflection stays open too: it only describes the public API (which is in the repository
anyway) and lets `grpcurl` discover it; it runs no model and reads no data.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import grpc

log = logging.getLogger(__name__)

ENV_VAR = "MMNTP_API_KEYS"
PROTECTED_PREFIXES = ("/mmntp.v1.GenerationService/", "/mmntp.v1.BatchService/")


def load_api_keys(
    path: str | Path | None = None,
    env: dict[str, str] | None = None,
    allow_empty: bool = False,
) -> list[str]:
    """Keys from the file if given, else from $MMNTP_API_KEYS; [] means no authentication.

    A file without a key, or the variable set but blank, raises ValueError (a typo must
    not open the server) unless `allow_empty`; an unset variable gives [].
    """
    hint = "or pass --allow-unauthenticated to serve without authentication"
    if path is not None:
        lines = Path(path).read_text().splitlines()
        keys = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
        if not keys and not allow_empty:
            raise ValueError(f"--api-keys-file {path} holds no keys; add one, {hint}")
    else:
        environ = os.environ if env is None else env
        raw = environ.get(ENV_VAR)
        keys = [k.strip() for k in (raw or "").split(",") if k.strip()]
        if raw is not None and not keys and not allow_empty:
            raise ValueError(f"${ENV_VAR} is set but holds no key; unset it, set keys, {hint}")
    bad = [i for i, k in enumerate(keys) if any(c.isspace() for c in k) or not k.isprintable()]
    if bad:
        raise ValueError(f"API key #{bad[0] + 1} contains whitespace or unprintable characters")
    return keys


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of an `authorization: Bearer TOKEN` entry (scheme case-insensitive)."""
    for key, value in metadata or ():
        if key != "authorization":
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


class FailureLog:
    """Counts failures; logs at most one WARNING per `every` seconds (count and latest)."""

    def __init__(
        self,
        every: float = 10.0,
        what: str = "call(s) refused for authentication",
        logger: logging.Logger = log,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.every, self.what, self.logger, self.clock = every, what, logger, clock
        self._last: float | None = None
        self._count = 0

    def note(self, reason: str, method: str) -> bool:
        """Record one failure; returns whether a line was written."""
        self._count += 1
        now = self.clock()
        if self._last is not None and now - self._last < self.every:
            return False
        since = "" if self._last is None else f" in the last {now - self._last:.0f} s"
        self.logger.warning(
            "%d %s%s (latest: %s, %s)", self._count, self.what, since, reason, method
        )
        self._last, self._count = now, 0
        return True


class KeyCheck:
    """The configured keys and what a refusal does: `on_failure(reason)` (e.g. a metric;
    reason "missing" or "invalid") and one rate-limited log. gRPC's interceptor and the
    HTTP API share one, so both count and log refusals the same way."""

    def __init__(
        self,
        keys: Iterable[str],
        on_failure: Callable[[str], None] | None = None,
        log_every: float = 10.0,
    ):
        self._keys = [k.encode() for k in keys]
        if not self._keys:
            raise ValueError("ApiKeyInterceptor needs at least one key")
        self._on_failure = on_failure
        self.failures = FailureLog(log_every)

    def is_valid(self, token: str | None) -> bool:
        if token is None:
            return False
        given = token.encode()
        # Compare against every key (no early exit) in constant time per key.
        matches = [hmac.compare_digest(given, key) for key in self._keys]
        return any(matches)

    def refusal(self, token: str | None, method: str) -> str | None:
        """None if `token` is a configured key; else count and log the refusal and return
        the reason ("missing" or "invalid")."""
        if self.is_valid(token):
            return None
        reason = "missing" if token is None else "invalid"
        if self._on_failure is not None:
            self._on_failure(reason)
        self.failures.note(f"{reason} API key", method)
        return reason


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Refuses protected methods with UNAUTHENTICATED unless a configured key is presented.

    `check` is the KeyCheck it shares with the HTTP API (made from `keys`, `on_failure`
    and `log_every` when not given).
    """

    def __init__(
        self,
        keys: Iterable[str] = (),
        protected: tuple[str, ...] = PROTECTED_PREFIXES,
        on_failure: Callable[[str], None] | None = None,
        log_every: float = 10.0,
        check: KeyCheck | None = None,
    ):
        self.check = check or KeyCheck(keys, on_failure, log_every)
        self._protected = protected
        self.failures = self.check.failures
        self.is_valid = self.check.is_valid

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(self._protected):
            return handler
        token = bearer_token(handler_call_details.invocation_metadata)
        reason = self.check.refusal(token, method)
        if reason is None:
            return handler
        return _refusal(handler, f"{reason} API key: send metadata 'authorization: Bearer KEY'")


def _refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that aborts with UNAUTHENTICATED."""
    code = grpc.StatusCode.UNAUTHENTICATED
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }

    async def unary(request_or_iterator, context):
        await context.abort(code, message)

    async def streaming(request_or_iterator, context):
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator; abort raises first

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming, **kwargs)
    return grpc.unary_unary_rpc_method_handler(unary, **kwargs)
