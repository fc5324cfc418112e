"""Helpers for the HL7 integration tests: store messages through the real ACK path, run work."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from referrals.worker import Worker
from refloop.services import Services
from refloop.wiring import all_handlers

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "hl7v2"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


class Feed:
    """Store raw messages exactly as the listener does (assess + store), then run the worker."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.adapter = services.adapters["hl7"]

    def send(self, raw: bytes) -> bytes | None:
        frame = self.adapter.intake.assess_frame(raw)
        return self.adapter.intake.store([frame])[0]

    def drain(self, max_rounds: int = 10_000) -> int:
        handlers = {k: v for k, v in all_handlers(self.services).items()
                    if k.startswith("hl7.")}
        return Worker(self.services.work, handlers).drain(max_rounds)


@pytest.fixture
def feed(services: Services) -> Feed:
    return Feed(services)


class Partner:
    """A real MLLP partner: python-hl7's asyncio MLLP server on 127.0.0.1 (port 0) in a thread.

    It records every message it receives (raw text) and answers each with python-hl7's own
    `create_ack`, taking the code from `answers` in order (then AA)."""

    def __init__(self, answers: list[str] | None = None, *, port: int = 0) -> None:
        import asyncio

        self.answers = list(answers or [])
        self.received: list[str] = []
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Partner:
        self._thread.start()
        assert self._ready.wait(10), "the MLLP partner did not start"
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        import asyncio

        from hl7.mllp import start_hl7_server

        async def serve(reader: Any, writer: Any) -> None:
            try:
                while not writer.is_closing():
                    message = await reader.readmessage()
                    self.received.append(str(message))
                    code = self.answers.pop(0) if self.answers else "AA"
                    writer.writemessage(message.create_ack(code))
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            start_hl7_server(serve, "127.0.0.1", self.port, encoding="utf-8"))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()


def free_port() -> int:
    """A port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def listening(services: Services, config: Any) -> Iterator[int]:
    """Run the MLLP listener with `config` (its port 0: a free one) in a thread; yield the
    bound port; stop it afterwards."""
    from hl7_bridge.listener import run_listener

    intake = services.adapters["hl7"].intake
    intake.config = config
    stop, ready, box = threading.Event(), threading.Event(), []
    thread = threading.Thread(target=run_listener, args=(config, intake, stop, ready, box),
                              daemon=True)
    thread.start()
    assert ready.wait(10), "the MLLP listener did not start"
    try:
        yield box[0]
    finally:
        stop.set()
        thread.join(10)
