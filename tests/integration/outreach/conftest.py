"""Fixtures for the outreach tests; the harness itself is in outreach_harness.py."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# appended, not inserted first, so that this directory's modules never shadow another's
sys.path.append(str(Path(__file__).resolve().parent))

from outreach_harness import Harness, _sandboxes, make_harness

from outreach.sandbox import MailCapture, TwilioSandbox


@pytest.fixture
def sandboxes() -> Iterator[tuple[TwilioSandbox, MailCapture]]:
    yield from _sandboxes()


@pytest.fixture
def harness(database_url: str, tmp_path: Path,
            sandboxes: tuple[TwilioSandbox, MailCapture]) -> Iterator[Harness]:
    yield from make_harness(database_url, tmp_path, sandboxes)
