"""Batch writers' core pieces, on SQLite and PostgreSQL: ReferralBatch (many commands, one
write), ResourceStore.put_later/write_pending, Bulk, and the worker's handle_many contract."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from referrals.batch import ReferralBatch
from referrals.errors import ConflictError, IllegalTransition
from referrals.lifecycle import Transition
from referrals.model import Command, Referral, Stage, new_referral_id
from referrals.store.resources import PendingWrites
from referrals.store.schema import referral_events, referrals, resource_versions
from referrals.store.work import WorkItem
from referrals.worker import Worker
from refloop.services import Services


def draft(key: str) -> Referral:
    return Referral(id=new_referral_id(), source_key=f"test|{key}",
                    service_request=f"ServiceRequest/{key}", patient="Patient/p1")


def test_a_batch_writes_what_the_service_would(services: Services) -> None:
    """Open, act and act again in one batch: one row at its final version, every event in
    order with the state it left, listeners after the write, in order."""
    seen: list[tuple[str, int, int]] = []

    def listener(conn: Any, change: Transition) -> None:
        stored = conn.execute(sa.select(referrals.c.version).where(
            referrals.c.id == change.referral.id)).scalar()
        seen.append((change.event.action, change.event.seq, stored))

    services.referrals.listeners.append(listener)
    existing, _ = services.referrals.open(draft("old"), Command("detect"))
    with services.db.write() as conn:
        batch = ReferralBatch(services.referrals, conn)
        batch.load_sources(["test|new", "test|old"])
        new, created = batch.open(draft("new"), Command("detect"))
        again, created_again = batch.open(draft("new"), Command("detect"))
        old, created_old = batch.open(draft("old"), Command("detect"))
        assert (created, created_again, created_old) == (True, False, False)
        assert again.id == new.id and old.id == existing.id
        batch.act(new.id, Command("accept"))
        batch.act(existing.id, Command("amend", changes={"priority": "stat"}))
        with pytest.raises(IllegalTransition):  # the lifecycle's rules, in memory
            batch.act(new.id, Command("no-show"))
        assert seen == [("detect", 1, 1)]  # only the service's own open so far
        batch.flush()
    assert seen[1:] == [("detect", 1, 2), ("accept", 2, 2), ("amend", 2, 2)]
    stored = services.store.get(new.id)
    assert stored.stage == Stage.ACCEPTED and stored.version == 2
    assert [e.action for e in services.store.events(new.id)] == ["detect", "accept"]
    assert services.store.get(existing.id).priority == "stat"
    assert services.store.get(existing.id).version == 2


def test_a_lost_race_raises_conflict_at_flush(services: Services) -> None:
    with services.db.write() as conn:
        batch = ReferralBatch(services.referrals, conn)
        batch.open(draft("race"), Command("detect"))
        # another writer stores the same source key before the flush
        conn.execute(referrals.insert().values(
            id=new_referral_id(), source_key="test|race", stage="detected",
            task_status="requested", priority="routine", patient="Patient/p1",
            service_request="ServiceRequest/race", created_at=sa.func.now(),
            updated_at=sa.func.now(), version=1, state={}, task={}))
        with pytest.raises(ConflictError):
            batch.flush()


def test_resource_versions_are_decided_then_written_together(services: Services) -> None:
    store = services.resources
    services.resources.put({"resourceType": "Patient", "id": "a", "gender": "male"},
                           server="s")
    with services.db.write() as conn:
        current = store.current_many({("s", "Patient", "a"), ("s", "Patient", "b")}, conn)
        assert set(current) == {("s", "Patient", "a")}
        pending = PendingWrites()
        a1 = store.put_later({"resourceType": "Patient", "id": "a", "gender": "female"},
                             current[("s", "Patient", "a")], server="s", pending=pending)
        a2 = store.put_later({"resourceType": "Patient", "id": "a", "gender": "other"}, a1,
                             server="s", pending=pending)
        same = store.put_later({"resourceType": "Patient", "id": "a", "gender": "other"}, a2,
                               server="s", pending=pending)
        b1 = store.put_later({"resourceType": "Patient", "id": "b"}, None, server="s",
                             pending=pending)
        assert (a1.version, a2.version, same.version, b1.version) == (2, 3, 3, 1)
        store.write_pending(pending, conn)
    assert store.try_get("Patient", "a", server="s") == {
        "resourceType": "Patient", "id": "a", "gender": "other"}
    assert [v["version"] for v in store.history("Patient", "a", server="s")] == [1, 2, 3]
    assert [v["version"] for v in store.history("Patient", "b", server="s")] == [1]


def _history_rows(services: Services, rid: str) -> list[tuple[int, Any]]:
    with services.db.read() as conn:
        return [(int(r.version), r.body) for r in conn.execute(
            sa.select(resource_versions.c.version, resource_versions.c.body)
            .where(resource_versions.c.resource_id == rid)
            .order_by(resource_versions.c.version))]


@pytest.mark.parametrize("path", ["put", "batch"])
def test_a_first_version_is_kept_once_until_the_second(services: Services, path: str) -> None:
    """A first version lives in `resources` alone (no history row, so its body is stored once);
    history still lists it, and the second version writes its row, with the first body and the
    time it was stored. A store that already has the first row (written before this rule)
    keeps it."""
    store = services.resources
    first = {"resourceType": "Patient", "id": "f", "gender": "male"}
    store.put(first, server="s")
    assert _history_rows(services, "f") == []
    (only,) = store.history("Patient", "f", server="s")
    assert (only["version"], only["body"], only["deleted"]) == (1, first, False)
    stored_at = only["recorded_at"]
    assert stored_at is not None
    second = {**first, "gender": "female"}
    if path == "put":
        assert store.put(second, server="s") == 2
    else:
        with services.db.write() as conn:
            pending = PendingWrites()
            current = store.current_many({("s", "Patient", "f")}, conn)[("s", "Patient", "f")]
            store.put_later(second, current, server="s", pending=pending)
            store.write_pending(pending, conn)
    assert _history_rows(services, "f") == [(1, first), (2, second)]
    history = store.history("Patient", "f", server="s")
    assert [(h["version"], h["body"]) for h in history] == [(1, first), (2, second)]
    assert history[0]["recorded_at"] == stored_at
    with services.db.write() as conn:  # an older store: every version has its row
        conn.execute(resource_versions.insert().values(
            server="s", resource_type="Patient", resource_id="g", version=1, deleted=False,
            body=first, recorded_at=sa.func.now()))
    store.put({**first, "id": "g"}, server="s")
    assert store.put({**second, "id": "g"}, server="s") == 2
    assert [v for v, _ in _history_rows(services, "g")] == [1, 2]


def test_a_stale_resource_version_raises_conflict(services: Services) -> None:
    store = services.resources
    store.put({"resourceType": "Patient", "id": "a"}, server="s")
    with services.db.write() as conn:
        current = store.current_many({("s", "Patient", "a")}, conn)[("s", "Patient", "a")]
        pending = PendingWrites()
        store.put_later({"resourceType": "Patient", "id": "a", "gender": "male"}, current,
                        server="s", pending=pending)
        store.put({"resourceType": "Patient", "id": "a", "gender": "female"}, server="s",
                  conn=conn)  # someone else's write in between
        with pytest.raises(ConflictError):
            store.write_pending(pending, conn)


class Many:
    """A batch handler: handles the first two items itself and completes them."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.one_by_one: list[int] = []
        self.fail = False

    def __call__(self, item: WorkItem) -> None:
        self.one_by_one.append(item.id)

    def handle_many(self, items: list[WorkItem]) -> list[int]:
        if self.fail:
            raise RuntimeError("the batch failed")
        mine = items[:2]
        with self.services.db.write() as conn:
            self.services.work.complete_many(mine, items[0].lease_owner or "", conn)
        return [item.id for item in mine]


@pytest.mark.parametrize("fail", [False, True])
def test_the_worker_gives_batch_handlers_their_items(services: Services, fail: bool) -> None:
    ids = [services.work.enqueue("test.many", {"n": n}, key=f"many-{n}") for n in range(4)]
    handler = Many(services)
    handler.fail = fail
    assert Worker(services.work, {"test.many": handler}).drain() == 4
    assert handler.one_by_one == (ids if fail else ids[2:])
    assert services.work.counts() == {"done": 4}


def test_events_of_a_batch_keep_their_order(services: Services) -> None:
    with services.db.write() as conn:
        batch = ReferralBatch(services.referrals, conn)
        referral, _ = batch.open(draft("order"), Command("detect"))
        for action in ("triage", "accept"):
            batch.act(referral.id, Command(action))
        batch.flush()
    with services.db.read() as conn:
        rows = conn.execute(sa.select(referral_events.c.seq, referral_events.c.action)
                            .where(referral_events.c.referral_id == referral.id)
                            .order_by(referral_events.c.id)).all()
    assert [tuple(r) for r in rows] == [(1, "detect"), (2, "triage"), (3, "accept")]
