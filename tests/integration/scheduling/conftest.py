"""The scheduling world: Refloop on SQLite and PostgreSQL with a destination whose calendar is
on sekmet-fhir (the EHR peer, one per test module), a referral accepted for a patient of that
calendar, and Flask's test client for the patient pages (over https, as the Secure cookie
needs). The helpers are in sched_world.py."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from calendar_data import Sekmet, make_calendar, start_sekmet
from sched_world import World, make_world


@pytest.fixture(scope="module")
def sekmet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sekmet]:
    peer = start_sekmet(tmp_path_factory.mktemp("sekmet"))
    yield peer
    peer.stop()


@pytest.fixture
def world(database_url: str, tmp_path: Path, sekmet: Sekmet) -> Iterator[World]:
    calendar = make_calendar(sekmet.base)
    services, app = make_world(database_url, tmp_path, calendar)
    yield World(services, calendar, app.test_client(), app)
    services.close()
