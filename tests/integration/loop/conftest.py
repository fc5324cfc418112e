"""Fixtures of the loop tests: sekmet-fhir as the referrer's EHR and as the specialist's (one pair
per test module). The world itself is in loop_world.py."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# appended, not inserted first: the other directories' `from conftest import` stay theirs
sys.path.append(str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parent.parent / "scheduling"))

from calendar_data import Sekmet, start_sekmet
from loop_world import Ehr


@pytest.fixture(scope="module")
def ehrs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ehr, Ehr]]:
    referrer = start_sekmet(tmp_path_factory.mktemp("referrer-ehr"))
    specialist = start_sekmet(tmp_path_factory.mktemp("specialist-ehr"))
    peers: list[Sekmet] = [referrer, specialist]
    yield Ehr(referrer.base), Ehr(specialist.base)
    for peer in peers:
        peer.stop()
