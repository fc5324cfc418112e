"""Helpers for the HL7 integration tests: store messages through the real ACK path, run work."""

from __future__ import annotations

from pathlib import Path

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

    def drain(self) -> int:
        handlers = {k: v for k, v in all_handlers(self.services).items()
                    if k.startswith("hl7.")}
        return Worker(self.services.work, handlers).drain()


@pytest.fixture
def feed(services: Services) -> Feed:
    return Feed(services)
