"""The ACK path on every core: one acceptor hands connections to several listener processes.

Python runs one thread of bytecode per process, so one listener process keeps one core busy at
most. The `mllp` role therefore binds the port once and starts `[hl7] processes` listener
processes (default: one per core). Its acceptor accepts each connection, checks the caps
(total and per source address, across all processes), and hands the socket to the listener
process with the fewest open connections (`socket.send_fds` over a Unix socket pair). That
process serves the connection until it closes, with its own group commit. Connections fill the
first process up to `[hl7] connections_per_process` (default 4) before the next one gets any,
then go to the process with the fewest: on SQLite the processes take turns to commit (one
writer at a time), so a few connections batch best in one process (one fsync for all of
them), while many connections need every core. So:

- a sender's connection stays on one process: the order of its messages and of their ACKs is
  kept as in a single listener;
- a duplicate sent on another connection, to another process, is still caught by the store's
  unique key (the sender and MSH-10) and answered as a duplicate;
- the placement is chosen, not hashed: SO_REUSEPORT's hashing promises no even spread for a
  handful of connections, and cannot keep a few connections together.

A listener process dies with its parent (PR_SET_PDEATHSIG), so a killed role leaves no process
behind still holding connections; it stops gracefully when its channel to the acceptor closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from hl7_bridge.config import Hl7Config
from hl7_bridge.intake import Intake
from hl7_bridge.listener import ConnectionLimits, Listener

log = logging.getLogger("refloop.hl7.processes")

READY, HANDOVER, CLOSED = b"R", b"H", b"X"
START_TIMEOUT = 120.0


class Process(Protocol):
    """What the acceptor needs of a started listener process (multiprocessing.Process)."""

    pid: int | None

    def is_alive(self) -> bool: ...

    def join(self, timeout: float | None = None) -> None: ...

    def kill(self) -> None: ...


#: starts listener process number `index`, given its end of the channel to the acceptor
Spawn = Callable[[socket.socket, int], Process]


@dataclass
class _Worker:
    index: int
    process: Process
    channel: socket.socket
    ready: bool = False
    open: set[int] = field(default_factory=set)


class Acceptor:
    def __init__(self, config: Hl7Config, workers: list[_Worker], listening: socket.socket,
                 stop: threading.Event) -> None:
        self.config = config
        self.workers = workers
        self.listening = listening
        self.stop = stop
        self.limits = ConnectionLimits(config.max_connections, config.max_connections_per_source)
        self.sources: dict[int, tuple[_Worker, str]] = {}
        self.ids = itertools.count(1)
        self.failed = ""

    async def run(self, ready: threading.Event | None) -> None:
        loop = asyncio.get_running_loop()
        started = loop.create_future()
        for worker in self.workers:
            worker.channel.setblocking(False)
            loop.add_reader(worker.channel, self._on_message, worker, started)
        try:
            await asyncio.wait_for(started, START_TIMEOUT)
        except TimeoutError:
            self.failed = f"listener processes did not start within {START_TIMEOUT:.0f} s"
        if not self.failed:
            self.listening.listen(1024)
            self.listening.setblocking(False)
            loop.add_reader(self.listening, self._on_accept)
            log.info("MLLP listener started", extra={
                "host": self.config.host, "port": self.listening.getsockname()[1],
                "processes": len(self.workers), "tls": bool(self.config.tls_cert)})
            if ready is not None:
                ready.set()
            await loop.run_in_executor(None, self._wait_for_stop)
            loop.remove_reader(self.listening)
        for worker in self.workers:
            loop.remove_reader(worker.channel)

    def _wait_for_stop(self) -> None:
        while not self.stop.wait(0.5):
            if self.failed:
                return

    def _on_accept(self) -> None:
        while True:
            try:
                conn, address = self.listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("MLLP accept failed", extra={"error": str(exc)})
                return
            self._hand_over(conn, str(address[0]))

    def _hand_over(self, conn: socket.socket, source: str) -> None:
        with conn:
            if not self.limits.admit(source):
                log.warning("MLLP connection refused: too many connections",
                            extra={"peer": source, "open": len(self.sources)})
                with contextlib.suppress(OSError):
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                return
            worker = self._choose()
            conn_id = next(self.ids)
            try:
                socket.send_fds(worker.channel, [HANDOVER + str(conn_id).encode()],
                                [conn.fileno()])
            except OSError as exc:
                log.error("MLLP hand-over failed", extra={"process": worker.index,
                                                          "error": str(exc)})
                self.limits.release(source)
                return
            worker.open.add(conn_id)
            self.sources[conn_id] = (worker, source)

    def _choose(self) -> _Worker:
        """The first process with fewer than `connections_per_process` connections, else the
        one with the fewest: a few busy connections share one process's commits (one fsync
        for all of them), many spread over every core."""
        ready = [w for w in self.workers if w.ready]
        for worker in ready:
            if len(worker.open) < self.config.connections_per_process:
                return worker
        return min(ready, key=lambda w: len(w.open))

    def _on_message(self, worker: _Worker, started: asyncio.Future[None]) -> None:
        try:
            data = worker.channel.recv(64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(worker.channel)
            if not self.stop.is_set():
                self.failed = f"listener process {worker.index} exited"
                log.error("MLLP listener process exited", extra={
                    "process": worker.index, "pid": worker.process.pid})
            if not started.done():
                started.set_result(None)
            return
        if data[:1] == READY:
            worker.ready = True
            if all(w.ready for w in self.workers) and not started.done():
                started.set_result(None)
        elif data[:1] == CLOSED:
            conn_id = int(data[1:])
            entry = self.sources.pop(conn_id, None)
            if entry is not None:
                entry[0].open.discard(conn_id)
                self.limits.release(entry[1])


def run_listener_processes(config: Hl7Config, spawn: Spawn, stop: threading.Event,
                           ready: threading.Event | None = None,
                           port_box: list[int] | None = None, port: int | None = None) -> None:
    """Bind, start `config.process_count` listener processes, hand them connections until
    `stop` is set; then stop them. Raises RuntimeError when a listener process fails."""
    # bound now (a taken port fails at once), listening only once every process is ready:
    # until then a sender's connect is refused and it retries, rather than wait unanswered
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((config.host, config.port if port is None else port))
    except OSError:
        listening.close()
        raise
    if port_box is not None:
        port_box.append(int(listening.getsockname()[1]))
    workers: list[_Worker] = []
    acceptor: Acceptor | None = None
    try:
        for index in range(config.process_count):
            parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            with child_end:
                workers.append(_Worker(index, spawn(child_end, index), parent_end))
        acceptor = Acceptor(config, workers, listening, stop)
        asyncio.run(acceptor.run(ready))
    finally:
        listening.close()
        for worker in workers:
            with contextlib.suppress(OSError):
                worker.channel.shutdown(socket.SHUT_RDWR)
            worker.channel.close()
        for worker in workers:
            worker.process.join(15)
            if worker.process.is_alive():
                log.warning("MLLP listener process did not stop; killing it",
                            extra={"process": worker.index})
                worker.process.kill()
                worker.process.join(5)
    if acceptor is not None and acceptor.failed and not stop.is_set():
        raise RuntimeError(f"MLLP listener: {acceptor.failed}")


# --- inside a listener process ---------------------------------------------------------------

def die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (a SIGKILLed role leaves nothing
    behind); stop on the acceptor's word, not on the terminal's Ctrl-C."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def serve_handed(config: Hl7Config, intake: Intake, channel: socket.socket) -> None:
    """Serve the connections the acceptor hands over `channel` until it closes."""

    intake.shared_store = True

    async def main() -> None:
        loop = asyncio.get_running_loop()
        listener = Listener(config, intake, count_connections=False)
        await listener.start_handed()
        closed: asyncio.Future[None] = loop.create_future()
        channel.setblocking(False)

        def notify(conn_id: bytes) -> Callable[[], None]:
            def closed_connection() -> None:
                with contextlib.suppress(OSError):
                    channel.send(CLOSED + conn_id)
            return closed_connection

        adopting: set[asyncio.Task[None]] = set()

        def on_message() -> None:
            try:
                data, fds, _flags, _address = socket.recv_fds(channel, 64, 4)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, fds = b"", []
            if not data:
                loop.remove_reader(channel)
                if not closed.done():
                    closed.set_result(None)
                return
            for fd in fds:
                sock = socket.socket(fileno=fd)
                task = loop.create_task(_adopt(listener, sock, notify(data[1:])))
                adopting.add(task)
                task.add_done_callback(adopting.discard)

        loop.add_reader(channel, on_message)
        channel.send(READY)
        await closed
        await listener.stop()

    asyncio.run(main())
    channel.close()


async def _adopt(listener: Listener, sock: socket.socket, on_close: Callable[[], None]) -> None:
    try:
        await listener.adopt(sock, on_close)
    except (OSError, ConnectionError) as exc:  # the peer left (or TLS failed) before we began
        log.info("MLLP connection lost at hand-over", extra={"error": str(exc)})
        sock.close()
        on_close()
