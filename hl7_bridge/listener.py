"""The asyncio MLLP listener of one process: persistent connections, group commit, ACK after
durable storage.

Each connection is an asyncio protocol reading frames with `FrameDecoder` (split or joined
across reads, junk skipped, size capped). Complete frames are assessed at once (a lean MSH
read) and queued for the committer. The committer stores what is queued in one transaction on a
writer thread (the event loop never waits on the database) and answers each frame on its
connection, in order. It adapts to the load with no fixed wait: as soon as the previous commit
is done it takes everything that has arrived meanwhile (after one pass of the event loop, so
data already readable is in the group too); under load a commit carries as many messages as
there are connections waiting, with one connection it carries one.

Time limits: `idle_timeout_seconds` between frames, and `read_timeout_seconds` for a whole
frame, from its first byte to its last (a sender trickling bytes cannot hold a frame open).
Connection caps (`max_connections`, `max_connections_per_source`) are checked when a
connection arrives; over a cap the connection is closed at once.

`run_listener` serves one process (it accepts connections itself). `hl7_bridge.processes` runs
several such listeners, with one acceptor handing each new connection to one of them.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from hl7_bridge.config import Hl7Config
from hl7_bridge.framing import FrameDecoder, FrameTooLarge, build_frame, is_r2_block
from hl7_bridge.intake import OVERSIZE_KEPT, Frame, Intake

log = logging.getLogger("refloop.hl7.listener")

#: frames a connection may have waiting for their ACK before we stop reading from it
MAX_IN_FLIGHT = 64


def build_ssl_context(config: Hl7Config) -> ssl.SSLContext | None:
    if not config.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key or None)
    if config.tls_client_ca:
        context.load_verify_locations(config.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class ConnectionLimits:
    """Caps on open connections, in total and per source address (0 = no cap)."""

    def __init__(self, total: int, per_source: int) -> None:
        self.total, self.per_source = total, per_source
        self.open: collections.Counter[str] = collections.Counter()

    def admit(self, source: str) -> bool:
        if self.total and sum(self.open.values()) >= self.total:
            return False
        if self.per_source and self.open[source] >= self.per_source:
            return False
        self.open[source] += 1
        return True

    def release(self, source: str) -> None:
        self.open[source] -= 1
        if self.open[source] <= 0:
            del self.open[source]


@dataclass
class CommitStats:
    """Group commit figures of one listener process (logged when it stops)."""

    commits: int = 0
    messages: int = 0
    largest: int = 0
    sizes: collections.Counter[int] = field(default_factory=collections.Counter)

    def add(self, size: int) -> None:
        self.commits += 1
        self.messages += size
        self.largest = max(self.largest, size)
        self.sizes[size] += 1

    def as_dict(self) -> dict[str, object]:
        return {"commits": self.commits, "messages": self.messages, "largest": self.largest,
                "per_commit": round(self.messages / self.commits, 2) if self.commits else 0.0,
                "sizes": dict(sorted(self.sizes.items()))}


class Connection(asyncio.Protocol):
    """One MLLP connection: frames in, ACKs out in the same order."""

    def __init__(self, listener: Listener, source: str, counted: bool) -> None:
        self.listener = listener
        self.source = source
        self.counted = counted
        self.decoder = FrameDecoder(listener.config.max_message_bytes)
        self.transport: asyncio.Transport | None = None
        self.peer_cn: str | None = None
        self.in_flight = 0
        self.paused = False
        self.closing = False
        self.peer_done = False
        self.frame_started: float | None = None
        self.last_activity = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.on_close: list[Callable[[], None]] = []

    # --- asyncio protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer_cn = _peer_cn(transport)
        self.last_activity = self.listener.loop.time()
        self.listener.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._schedule()
        log.info("MLLP connection opened", extra={"peer": self.source})

    def data_received(self, data: bytes) -> None:
        loop = self.listener.loop
        self.last_activity = loop.time()
        try:
            frames = self.decoder.feed(data)
        except FrameTooLarge as exc:
            self.frame_started = None
            self._oversize(exc)
            return
        if self.decoder.pending:
            if frames or self.frame_started is None:
                self.frame_started = self.last_activity
                self._schedule()
        else:
            self.frame_started = None
        for raw in frames:
            if is_r2_block(raw):
                continue
            self._submit(self.listener.intake.assess_frame(raw, self.peer_cn))

    def eof_received(self) -> bool:
        """The sender half-closed (shutdown of its write side, as `nc -N` does): the frames it
        sent whole are still answered, then the connection closes (a partial frame is dropped).
        Returning True keeps our write side open until the last ACK is written."""
        self.peer_done = True
        return self.in_flight > 0

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.timer is not None:
            self.timer.cancel()
        self.listener.connections.discard(self)
        if self.counted:
            self.listener.limits.release(self.source)
        if self.decoder.skipped:
            log.info("MLLP junk bytes skipped", extra={"peer": self.source,
                                                       "bytes": self.decoder.skipped})
        log.info("MLLP connection closed", extra={"peer": self.source,
                                                  "error": str(exc) if exc else ""})
        for callback in self.on_close:
            callback()

    # --- frames and answers -------------------------------------------------------------------

    def _submit(self, frame: Frame, *, close_after: bool = False) -> None:
        self.in_flight += 1
        if self.in_flight >= MAX_IN_FLIGHT and not self.paused and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True
        self.listener.enqueue(self, frame, close_after)

    def answer(self, response: bytes | None, close_after: bool) -> None:
        self.in_flight -= 1
        if self.transport is None or self.transport.is_closing():
            return
        if response:
            self.transport.write(build_frame(response))
        if close_after or (self.peer_done and self.in_flight == 0):
            self.transport.close()
        elif self.paused and self.in_flight < MAX_IN_FLIGHT // 2:
            self.transport.resume_reading()
            self.paused = False

    def _oversize(self, exc: FrameTooLarge) -> None:
        """Answer AR (ERR 104) after keeping the frame's first part, then close: the stream
        cannot be trusted after a frame we did not read to its end."""
        log.warning("MLLP frame too large", extra={"peer": self.source, "limit": exc.limit})
        if self.transport is not None:
            self.transport.pause_reading()
        self._submit(self.listener.intake.oversize(exc.head[:OVERSIZE_KEPT], exc.limit),
                     close_after=True)

    # --- time limits --------------------------------------------------------------------------

    def _deadline(self) -> float:
        config = self.listener.config
        if self.frame_started is not None:
            return self.frame_started + config.read_timeout_seconds
        return self.last_activity + config.idle_timeout_seconds

    def _schedule(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.listener.loop.call_at(self._deadline(), self._check_time)

    def _check_time(self) -> None:
        self.timer = None
        if self.closing or self.transport is None:
            return
        if self.in_flight == 0 and self.listener.loop.time() >= self._deadline():
            partial = self.frame_started is not None
            log.info("MLLP connection timed out", extra={
                "peer": self.source, "partial": partial,
                "reason": "unfinished frame" if partial else "idle"})
            self.transport.close()
            return
        self._schedule()


@dataclass
class _Pending:
    connection: Connection
    frame: Frame
    close_after: bool


class Listener:
    """The listener of one process: its connections and its group committer."""

    def __init__(self, config: Hl7Config, intake: Intake, *, count_connections: bool = True
                 ) -> None:
        self.config = config
        self.intake = intake
        self.limits = ConnectionLimits(config.max_connections if count_connections else 0,
                                       config.max_connections_per_source
                                       if count_connections else 0)
        self.connections: set[Connection] = set()
        self.stats = CommitStats()
        self._queue: collections.deque[_Pending] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._server: asyncio.AbstractServer | None = None
        self._committer: asyncio.Task[None] | None = None
        self._ssl = build_ssl_context(config)
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hl7-store")
        self.loop: asyncio.AbstractEventLoop  # set when it starts, in its event loop

    async def start(self, port: int | None = None) -> int:
        """Bind and serve; returns the bound port (pass 0 for a free one)."""
        self._begin()
        self._server = await self.loop.create_server(
            self._accept, self.config.host, self.config.port if port is None else port,
            ssl=self._ssl, reuse_address=True)
        bound = int(self._server.sockets[0].getsockname()[1])
        log.info("MLLP listener started", extra={"host": self.config.host, "port": bound,
                                                   "tls": bool(self.config.tls_cert)})
        return bound

    def _begin(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._committer = asyncio.create_task(self._commit_loop())

    async def start_handed(self) -> None:
        """Serve only connections handed over by an acceptor (`adopt`)."""
        self._begin()

    async def adopt(self, sock: socket.socket,
                    on_close: Callable[[], None] | None = None) -> None:
        """Serve a connection accepted elsewhere (another process's acceptor)."""
        source = _source(sock)
        _, protocol = await self.loop.connect_accepted_socket(
            lambda: Connection(self, source, counted=False), sock, ssl=self._ssl)
        if on_close is not None:
            protocol.on_close.append(on_close)

    def _accept(self) -> Connection:
        # the peer address is known only in connection_made; caps are checked there
        return _CappedConnection(self)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()
        if self._server is not None:
            await self._server.wait_closed()
        while self._queue:
            await asyncio.sleep(0.01)
        if self._committer is not None:
            self._committer.cancel()
        self._executor.shutdown(wait=True)
        self.intake.close()
        log.info("MLLP listener stopped", extra={"group_commit": self.stats.as_dict()})

    # --- group commit -------------------------------------------------------------------------

    def enqueue(self, connection: Connection, frame: Frame, close_after: bool) -> None:
        self._queue.append(_Pending(connection, frame, close_after))
        assert self._wake is not None
        self._wake.set()

    async def _commit_loop(self) -> None:
        assert self._wake is not None
        expected: set[Connection] = set()
        last_commit = 0.0
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            await self._gather(expected, last_commit)
            if self.intake.waits_for_lock:
                # other processes commit to the same file: what arrives while we wait joins
                await self.loop.run_in_executor(self._executor, self.intake.acquire)
            await asyncio.sleep(0)  # one pass of the loop: frames already readable join
            group: list[_Pending] = []
            while self._queue and len(group) < self.config.group_commit_max:
                group.append(self._queue.popleft())
            frames = [p.frame for p in group]
            began = self.loop.time()
            try:
                if self._queue or self._busy_elsewhere(group):
                    # frames are waiting or on their way: read them while this commit runs
                    responses = await self.loop.run_in_executor(self._executor,
                                                                self.intake.store, frames)
                else:
                    # every busy connection is in this group: nothing to read meanwhile, so
                    # commit right here and save two thread hand-offs per commit
                    responses = self.intake.store(frames)
            except Exception:  # store() answers AR itself; this is a last resort
                log.exception("HL7 group commit failed")
                for pending in group:
                    pending.connection.answer(None, True)
                continue
            last_commit = self.loop.time() - began
            self.stats.add(sum(len(f.items) for f in frames))
            for pending, response in zip(group, responses, strict=True):
                pending.connection.answer(response, pending.close_after)
            expected = {p.connection for p in group}

    def _busy_elsewhere(self, group: list[_Pending]) -> bool:
        """True when a connection outside `group` has frames in flight (pipelining)."""
        inside = {p.connection for p in group}
        return any(c.in_flight and c not in inside for c in self.connections)

    async def _gather(self, expected: set[Connection], last_commit: float) -> None:
        """Adaptive group commit: wait for the connections answered by the previous commit to
        send their next message, for at most as long as that commit took. Waiting is worth it
        while commits cost more than a round trip to the senders (an fsync does), and it stops
        at once when every expected sender is in: with N connections busy, commits carry N
        messages instead of splitting them into two alternating halves. A connection that does
        not come back drops out of the expected set after one commit."""
        assert self._wake is not None
        if not expected or last_commit <= 0:
            return
        deadline = self.loop.time() + last_commit
        timer = self.loop.call_at(deadline, self._wake.set)
        try:
            while self.loop.time() < deadline:
                # in_flight counts a connection's queued frames: it is in
                if all(c.closing or c.in_flight for c in expected):
                    return
                self._wake.clear()
                await self._wake.wait()
        finally:
            timer.cancel()


class _CappedConnection(Connection):
    """A connection accepted by this process: the caps are checked when it arrives."""

    def __init__(self, listener: Listener) -> None:
        super().__init__(listener, "", counted=False)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.source = str(peer[0]) if peer else ""
        if not self.listener.limits.admit(self.source):
            log.warning("MLLP connection refused: too many connections",
                        extra={"peer": self.source, "open": len(self.listener.connections)})
            self.closing = True
            assert isinstance(transport, asyncio.Transport)
            transport.abort()
            return
        self.counted = True
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return  # refused in connection_made
        super().connection_lost(exc)


def _peer_cn(transport: asyncio.BaseTransport) -> str | None:
    cert = transport.get_extra_info("peercert")
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def _source(sock: socket.socket) -> str:
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return ""


def run_listener(config: Hl7Config, intake: Intake, stop: threading.Event,
                 ready: threading.Event | None = None, port_box: list[int] | None = None) -> None:
    """Serve in this process until `stop` is set. `port_box` receives the bound port."""

    async def main() -> None:
        listener = Listener(config, intake)
        port = await listener.start()
        if port_box is not None:
            port_box.append(port)
        if ready is not None:
            ready.set()
        await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        await listener.stop()

    asyncio.run(main())
