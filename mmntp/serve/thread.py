"""A real mmntp gRPC server on a free loopback port, in a background thread.

The server runs on its own event loop so synchronous code (the SDK, tests, `mmntp eval
audio`'s over-gRPC figures, tools that call asyncio.run themselves) can talk to it.
"""

from __future__ import annotations

import asyncio
import threading

from mmntp.serve.server import Server, ServerConfig


class ServerThread:
    """`Server(pipe, ...)` started on port 0 in a thread; `target` is its HOST:PORT and
    `http_url` its HTTP API's http://HOST:PORT (None unless `config.http_port` is set)."""

    def __init__(self, pipe, config: ServerConfig | None = None, **kwargs) -> None:
        self.pipe = pipe
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        config = config or ServerConfig(port=0, warmup=False)
        self.server: Server | None = None
        try:
            self.server = self.call(_build(pipe, config, kwargs))
            self.port = self.call(self.server.start())
        except BaseException:  # ServeError and the like: leave no port or thread behind
            self._close()
            raise
        self.target = f"127.0.0.1:{self.port}"
        http = self.server.http_port
        self.http_url = None if http is None else f"http://127.0.0.1:{http}"

    def call(self, coro, timeout: float = 120.0):
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, grace: float = 0.0) -> None:
        self._close(grace)

    def _close(self, grace: float = 0.0) -> None:
        try:
            if self.server is not None:
                self.call(self.server.stop(grace))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _build(pipe, config: ServerConfig, kwargs) -> Server:
    return Server(pipe, config, **kwargs)  # grpc.aio servers are made inside their loop
