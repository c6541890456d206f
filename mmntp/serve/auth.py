"""API-key authentication: metadata `authorization: Bearer KEY`, checked in an interceptor.

Keys come from `--api-keys-file` (one per line; blank lines and lines starting with `#`
are skipped) or else the environment variable MMNTP_API_KEYS (comma-separated). With no
keys the server is open and says so in a warning.

What is protected: every method of `mmntp.v1.GenerationService`. The health service
stays open so that load balancers and orchestrators can probe without a secret, and
reflection stays open too: it only describes the public API (which is in the repository
anyway) and lets `grpcurl` discover it; it runs no model and reads no data.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import grpc

log = logging.getLogger(__name__)

ENV_VAR = "MMNTP_API_KEYS"
PROTECTED_PREFIXES = ("/mmntp.v1.GenerationService/",)


def load_api_keys(path: str | Path | None = None, env: dict[str, str] | None = None) -> list[str]:
    """Keys from the file if given, else from $MMNTP_API_KEYS; [] means no authentication."""
    if path is not None:
        lines = Path(path).read_text().splitlines()
        keys = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
        if not keys:
            raise ValueError(f"--api-keys-file {path} holds no keys")
    else:
        raw = (os.environ if env is None else env).get(ENV_VAR, "")
        keys = [k.strip() for k in raw.split(",") if k.strip()]
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


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Refuses protected methods with UNAUTHENTICATED unless a configured key is presented."""

    def __init__(self, keys: Iterable[str], protected: tuple[str, ...] = PROTECTED_PREFIXES):
        self._keys = [k.encode() for k in keys]
        if not self._keys:
            raise ValueError("ApiKeyInterceptor needs at least one key")
        self._protected = protected

    def is_valid(self, token: str | None) -> bool:
        if token is None:
            return False
        given = token.encode()
        # Compare against every key (no early exit) in constant time per key.
        matches = [hmac.compare_digest(given, key) for key in self._keys]
        return any(matches)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(self._protected):
            return handler
        token = bearer_token(handler_call_details.invocation_metadata)
        if self.is_valid(token):
            return handler
        reason = "missing API key" if token is None else "invalid API key"
        return _refusal(handler, f"{reason}: send metadata 'authorization: Bearer KEY'")


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
