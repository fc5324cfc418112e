"""Resource versions on SQLite and PostgreSQL: an older version that arrives after a newer one
stores nothing, whichever way it is written, and two writers of one resource take turns
instead of one failing."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from referrals.store.resources import PendingWrites
from refloop.services import Services

SR = {"resourceType": "ServiceRequest", "id": "sr", "status": "active"}


def _versions(services: Services, rid: str) -> list[tuple[int, Any]]:
    return [(h["version"], (h["body"] or {}).get("status"))
            for h in services.resources.history("ServiceRequest", rid, server="s")]


@pytest.mark.parametrize("meta", [
    ({"versionId": "2"}, {"versionId": "1"}),
    ({"lastUpdated": "2026-01-02T00:00:00Z"}, {"lastUpdated": "2026-01-02T01:00:00+02:00"}),
])
def test_an_older_version_arriving_late_stores_nothing(services: Services,
                                                       meta: tuple[dict, dict]) -> None:
    store = services.resources
    newer = {**SR, "meta": meta[0]}
    older = {**SR, "meta": meta[1], "status": "draft"}
    assert store.put(newer, server="s") == 1
    assert store.put(older, server="s") == 1
    with services.db.write() as conn:  # the batch writers' path
        current = store.current_many({("s", "ServiceRequest", "sr")}, conn)
        pending = PendingWrites()
        kept = store.put_later(older, current[("s", "ServiceRequest", "sr")], server="s",
                               pending=pending)
        store.write_pending(pending, conn)
    assert kept.version == 1 and store.try_get("ServiceRequest", "sr", server="s") == newer
    assert store.delete("ServiceRequest", "sr", server="s") == 2
    assert store.put(older, server="s") == 3  # a deleted resource takes any version again
    assert _versions(services, "sr") == [(1, "active"), (2, None), (3, "draft")]


def _wait_for_a_lock_waiter(services: Services) -> None:
    """PostgreSQL: until another session waits for a lock (the second writer is blocked). On
    SQLite the second writer waits for the write lock at BEGIN, which nothing shows."""
    if services.db.is_sqlite:
        return
    deadline = time.monotonic() + 10
    with services.db.engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()")).scalar()
            conn.rollback()
            if waiting:
                return
    raise AssertionError("the second writer never waited for the first")


@pytest.mark.parametrize("held", [False, True])
def test_two_writers_of_one_resource_take_turns(services: Services, held: bool) -> None:
    """The first writer's transaction is open while the second writes the same resource (a
    new one, or one at version 1): the second waits, then stores the next version."""
    store = services.resources
    if held:
        store.put(SR, server="s")
    outcome: list[Any] = []

    def second() -> None:
        try:
            outcome.append(store.put({**SR, "status": "completed"}, server="s"))
        except Exception as exc:  # the test reports what the writer raised
            outcome.append(exc)

    writer = threading.Thread(target=second)
    with services.db.write() as conn:
        store.put({**SR, "status": "on-hold"}, server="s", conn=conn)
        writer.start()
        _wait_for_a_lock_waiter(services)
    writer.join(30)
    first = 2 if held else 1
    assert outcome == [first + 1]
    assert _versions(services, "sr")[-2:] == [(first, "on-hold"), (first + 1, "completed")]
