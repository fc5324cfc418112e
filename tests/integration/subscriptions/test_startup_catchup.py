"""The start-up catch-up always runs, also when the worker restarts within the period of the last
reconciliation (its timer item has a key of its own, never de-duplicated against the period's)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from referrals.worker import Worker
from refloop.scheduler import start_scheduler
from refloop.services import Services
from refloop.wiring import all_handlers, all_timers
from subscriptions.mapping import source_key


def start_worker_once(services: Services) -> int:
    """What a worker process does when it starts (scheduler start: start-up items and the
    first tick), then everything due is run."""
    scheduler = start_scheduler(services.work, all_timers(services), tick_seconds=3600)
    scheduler.shutdown(wait=False)
    return Worker(services.work, all_handlers(services)).drain()


def test_restart_within_the_same_slot_still_catches_up(sekmet: Any, database_url: str,
                                                        tmp_path: Path,
                                                        kit: SimpleNamespace) -> None:
    # polling only (no pushes can hide the catch-up); one period of an hour: the restart
    # below happens inside the same slot as the first run's reconciliation
    sections = {"fhir_servers": [{"base_url": sekmet.base, "flavour": "polling",
                                  "poll_interval": 3600}]}
    first = kit.build_listener_services(database_url, tmp_path / "var", sections)
    try:
        assert start_worker_once(first) >= 1
        assert first.cursors.try_get(f"subscriptions:lastUpdated:{sekmet.base}")
    finally:
        first.close()

    # Refloop is down: an order is created (the EHR's pushes would be dropped)
    p = sekmet.create(kit.patient())["id"]
    d = sekmet.create(kit.practitioner())["id"]
    sr = sekmet.create(kit.service_request(p, d))

    second = kit.build_listener_services(database_url, tmp_path / "var", sections)
    try:
        start_worker_once(second)
        found = second.store.try_get_by_source(source_key(sekmet.base, sr["id"]))
        assert found is not None, "the start-up catch-up did not run after the restart"
    finally:
        second.close()
