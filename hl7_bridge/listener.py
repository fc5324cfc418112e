"""The asyncio MLLP listener: persistent connections, group commit, ACK after durable storage.

Each connection reads frames with `FrameDecoder` (split or joined across reads, junk skipped,
size capped). Frames go to one committer task that stores everything waiting in one
transaction on a writer thread (the event loop never blocks on the database), then each ACK
is written back on its connection, in order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import ssl
import threading
from dataclasses import dataclass, field

from hl7_bridge.ack import AckError, build_ack
from hl7_bridge.config import Hl7Config
from hl7_bridge.framing import FrameDecoder, FrameTooLarge, build_frame, is_r2_block
from hl7_bridge.header import HeaderError, parse_header
from hl7_bridge.intake import Frame, Intake

log = logging.getLogger("refloop.hl7.listener")


def build_ssl_context(config: Hl7Config) -> ssl.SSLContext | None:
    if not config.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key or None)
    if config.tls_client_ca:
        context.load_verify_locations(config.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@dataclass
class _Pending:
    frame: Frame
    done: asyncio.Future[bytes | None]


@dataclass
class Listener:
    config: Hl7Config
    intake: Intake
    _queue: asyncio.Queue[_Pending] | None = None
    _server: asyncio.AbstractServer | None = None
    _executor: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="hl7-store"))
    connections: int = 0
    _open: dict[asyncio.Task[None], asyncio.StreamWriter] = field(default_factory=dict)

    async def start(self, port: int | None = None) -> int:
        """Bind and serve; returns the bound port (pass 0 for a free one)."""
        self._queue = asyncio.Queue()
        self._committer = asyncio.create_task(self._commit_loop())
        self._server = await asyncio.start_server(
            self._serve, self.config.host, self.config.port if port is None else port,
            ssl=build_ssl_context(self.config), limit=1 << 20)
        bound = self._server.sockets[0].getsockname()[1]
        log.info("MLLP listener started", extra={"host": self.config.host, "port": bound,
                                                   "tls": bool(self.config.tls_cert)})
        return int(bound)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._open.values()):
            writer.close()
        await asyncio.gather(*self._open, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        self._committer.cancel()
        self._executor.shutdown(wait=True)

    async def _commit_loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            group = [await self._queue.get()]
            while not self._queue.empty() and len(group) < self.config.group_commit_max:
                group.append(self._queue.get_nowait())
            try:
                responses = await loop.run_in_executor(
                    self._executor, self.intake.store, [p.frame for p in group])
            except Exception as exc:  # store() answers AR itself; this is a last resort
                for pending in group:
                    if not pending.done.done():
                        pending.done.set_exception(exc)
                continue
            for pending, response in zip(group, responses, strict=True):
                if not pending.done.done():
                    pending.done.set_result(response)

    async def submit(self, frame: Frame) -> bytes | None:
        assert self._queue is not None
        done: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(frame, done))
        return await done

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        peer_cn = _peer_cn(writer)
        decoder = FrameDecoder(self.config.max_message_bytes)
        self.connections += 1
        task = asyncio.current_task()
        if task is not None:
            self._open[task] = writer
        log.info("MLLP connection opened", extra={"peer": str(peer)})
        try:
            await self._read_loop(reader, writer, decoder, peer_cn)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            log.info("MLLP connection lost", extra={"peer": str(peer), "error": str(exc)})
        finally:
            self.connections -= 1
            if task is not None:
                self._open.pop(task, None)
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
            if decoder.skipped:
                log.info("MLLP junk bytes skipped", extra={"peer": str(peer),
                                                           "bytes": decoder.skipped})

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         decoder: FrameDecoder, peer_cn: str | None) -> None:
        while True:
            timeout = (self.config.read_timeout_seconds if decoder.pending
                       else self.config.idle_timeout_seconds)
            try:
                data = await asyncio.wait_for(reader.read(1 << 16), timeout)
            except TimeoutError:
                log.info("MLLP connection timed out", extra={"partial": decoder.pending})
                return
            if not data:
                return
            try:
                frames = decoder.feed(data)
            except FrameTooLarge as exc:
                await self._answer_too_large(writer, exc)
                return
            for raw in frames:
                if is_r2_block(raw):
                    continue
                response = await self.submit(self.intake.assess_frame(raw, peer_cn))
                if response:
                    writer.write(build_frame(response))
                    await writer.drain()

    async def _answer_too_large(self, writer: asyncio.StreamWriter, exc: FrameTooLarge) -> None:
        """AR (the sender must not resend it unchanged), then close: the stream is unusable."""
        try:
            header = parse_header(exc.head)
        except HeaderError:
            header = None
        log.warning("MLLP frame too large", extra={"limit": exc.limit})
        code = "CR" if header is not None and header.enhanced_mode else "AR"
        writer.write(build_frame(build_ack(
            header, code, errors=(AckError(104, f"message larger than {exc.limit} bytes"),),
            application=self.config.application, facility=self.config.facility)))
        await writer.drain()


def _peer_cn(writer: asyncio.StreamWriter) -> str | None:
    cert = writer.get_extra_info("peercert")
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def run_listener(config: Hl7Config, intake: Intake, stop: threading.Event,
                 ready: threading.Event | None = None, port_box: list[int] | None = None) -> None:
    """Serve until `stop` is set (the `mllp` role). `port_box` receives the bound port."""

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
