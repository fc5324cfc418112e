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
from referrals.store.schema import referral_events, referrals
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
