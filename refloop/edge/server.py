"""The edge server of one process: its routes, the WSGI thread pool, connection limits, and
starting and stopping it (in a gunicorn worker, or in a thread for tests and the demo)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from refloop.edge.connection import EdgeConnection
from refloop.edge.limits import EdgeLimits
from refloop.edge.messages import Answer, Head, Route, outcome
from refloop.edge.wsgi import WSGIApp

log = logging.getLogger("refloop.http")

#: keeps the input of a request that failed unexpectedly: (head or None, body, reason)
Keep = Callable[[Head | None, bytes, str], None]


@dataclass
class EdgeApp:
    """What `refloop serve`'s web role serves: the WSGI application, the routes the edge
    answers itself, the limits, where failed input is kept, and headers for edge answers. It is
    also a plain WSGI application (everything then goes to `wsgi`)."""

    wsgi: WSGIApp
    routes: Sequence[Route] = ()
    limits: EdgeLimits = field(default_factory=EdgeLimits)
    keep: Keep = lambda head, body, reason: None
    extra_headers: tuple[tuple[str, str], ...] = ()

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        return self.wsgi(environ, start_response)


class EdgeServer:
    def __init__(self, app: EdgeApp, loop: asyncio.AbstractEventLoop,
                 address: tuple[str, int]) -> None:
        self.app = app
        self.wsgi = app.wsgi
        self.routes = tuple(app.routes)
        self.limits = app.limits
        self.extra_headers = app.extra_headers
        self.loop = loop
        self.address = address
        self.executor = ThreadPoolExecutor(app.limits.threads, thread_name_prefix="edge-wsgi")
        self.connections: set[EdgeConnection] = set()
        self.per_source: dict[str, int] = {}
        self._servers: list[asyncio.Server] = []
        self._date = (0, b"")

    # -- used by connections ---------------------------------------------------------------

    def route_for(self, path: str) -> Route | None:
        for route in self.routes:
            if path.startswith(route.prefix):
                return route
        return None

    def admit(self, connection: EdgeConnection) -> Answer | None:
        """Count a new connection; an Answer (503) when its source or the process is full."""
        source = connection.peer[0]
        held = self.per_source.get(source, 0)
        limit = self.limits.max_per_source
        if limit and held >= limit:
            log.warning("http: connection refused, per-source limit",
                        extra={"limit": limit})
            return outcome(503, "throttled", f"too many connections from this address (at most "
                           f"{limit}); close idle ones or try again", headers=(
                               ("Retry-After", "1"),))
        if len(self.connections) >= self.limits.max_connections:
            log.warning("http: connection refused, server full",
                        extra={"limit": self.limits.max_connections})
            return outcome(503, "transient", "the server has too many connections; try again",
                           headers=(("Retry-After", "1"),))
        self.per_source[source] = held + 1
        self.connections.add(connection)
        return None

    def release(self, connection: EdgeConnection) -> None:
        if connection not in self.connections:
            return
        self.connections.discard(connection)
        source = connection.peer[0]
        left = self.per_source.get(source, 1) - 1
        if left > 0:
            self.per_source[source] = left
        else:
            self.per_source.pop(source, None)

    def keep(self, head: Head | None, body: bytes, reason: str) -> None:
        try:
            self.app.keep(head, body, reason)
        except Exception:
            log.error("http: could not keep the input of a failed request",
                      extra={"why": reason})

    def date(self) -> bytes:
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, formatdate(now, usegmt=True).encode())
        return self._date[1]

    # -- running ---------------------------------------------------------------------------

    async def start(self, sockets: Sequence[socket.socket], backlog: int = 2048) -> None:
        for sock in sockets:
            self._servers.append(await self.loop.create_server(
                lambda: EdgeConnection(self), sock=sock, backlog=backlog))

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let requests in progress finish (up to `grace`), then close."""
        for server in self._servers:
            server.close()
        deadline = self.loop.time() + grace
        while any(c.busy or c.queue for c in self.connections) and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self.executor.shutdown(wait=False, cancel_futures=True)


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (faster), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    sock = socket.create_server((host, port), backlog=backlog, reuse_port=False)
    sock.setblocking(False)
    return sock


class RunningEdge:
    """An edge server on its own event loop in a thread (tests, the demo): `port`, `stop()`."""

    def __init__(self, app: EdgeApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = listen(host, port)
        self.host = host
        self.port = int(self.sock.getsockname()[1])
        self.loop = new_loop()
        self.server = EdgeServer(app, self.loop, (host, self.port))
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True,
                                       name=f"edge-{self.port}")
        self.thread.start()
        if not started.wait(10):
            raise RuntimeError("the edge server did not start")

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.start([self.sock]))
        started.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.server.stop(grace=2.0))
        self.loop.close()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.sock.close()


def serve_in_thread(app: EdgeApp, host: str = "127.0.0.1", port: int = 0) -> RunningEdge:
    return RunningEdge(app, host, port)
