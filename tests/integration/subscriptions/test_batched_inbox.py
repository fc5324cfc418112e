"""Group commit of hook notifications: Inbox.accept_many (the core addition it uses) and the
leader/follower writer under concurrent requests, on both databases."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from referrals.store.migrate import upgrade
from referrals.store.schema import inbox, work_items
from refloop.services import Services, build_services
from subscriptions.batched_inbox import BatchedInbox
from subscriptions.registry import Registry
from subscriptions.sqlite_batch import SqliteBatchWriter


def message(n: int, key: str | None) -> dict[str, object]:
    return {"channel": "fhir-subscription", "sender": "http://ehr/fhir", "body": f"{n}".encode(),
            "work_kind": "subscriptions.notification", "dedupe_key": key,
            "work_payload": {"hook_id": "h", "method": "PUT", "subpath": ""}}


def test_accept_many_dedupes_within_the_batch_and_against_the_store(services: Services) -> None:
    first = services.inbox.accept(**message(0, "k0"))  # type: ignore[arg-type]
    with services.db.write() as conn:
        results = services.inbox.accept_many(
            [message(1, "k0"), message(2, "k1"), message(3, None), message(4, "k1"),
             message(5, None)], conn)
    assert results[0] == first.__class__(first.inbox_id, True)
    assert not results[1].duplicate and results[3] == results[1].__class__(results[1].inbox_id,
                                                                           True)
    assert [r.duplicate for r in results] == [True, False, False, True, False]
    assert len({r.inbox_id for r in results}) == 4
    assert services.inbox.counts() == {"received": 4}
    assert services.work.counts() == {"pending": 4}
    stored = services.inbox.get(results[2].inbox_id)
    assert stored.body == b"3"


def test_concurrent_requests_are_all_stored_once(services: Services) -> None:
    writer = BatchedInbox(services.inbox, services.db,
                          Registry(services.db, services.settings.base_url))
    results: list[object] = []
    lock = threading.Lock()

    def send(thread: int) -> None:
        for n in range(40):
            got = writer.accept(message(n, f"t{thread}-{n % 30}"))  # 10 repeats per thread
            with lock:
                results.append(got)

    threads = [threading.Thread(target=send, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 320
    assert services.inbox.counts() == {"received": 240}
    assert services.work.counts() == {"pending": 240}


def stored_rows(services: Services) -> list[dict[str, object]]:
    """Every inbox row and work item, without ids and times (which differ between runs)."""
    with services.db.read() as conn:
        messages = [dict(r) for r in conn.execute(
            sa.select(inbox).order_by(inbox.c.id)).mappings()]
        items = [dict(r) for r in conn.execute(
            sa.select(work_items).order_by(work_items.c.id)).mappings()]
    for row in messages:
        assert row.pop("received_at").tzinfo is not None  # read back as aware UTC
        row.pop("id")
    for row in items:
        assert row.pop("run_at") == row.pop("created_at")
        row["payload"] = {**row["payload"], "inbox_id": "-"}
        row.pop("id")
        row.pop("idempotency_key")
    return messages + items


BATCH = [message(1, "k0"), message(2, "k1"), message(3, None), message(4, "k1"),
         {**message(5, "k5"), "work_kind": None, "status": "processed",
          "headers": {"content-type": "application/fhir+json"}, "content_type": "x/y"}]


def test_sqlite_fast_path_stores_what_accept_many_stores(sqlite_services: Services,
                                                         tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'core.db'}"
    other = build_services(sqlite_services.settings.with_changes(database_url=url))
    try:
        upgrade(other.db)
        for target in (sqlite_services, other):
            target.inbox.accept(**message(0, "k0"))  # type: ignore[arg-type]
        fast = SqliteBatchWriter(sqlite_services.db).store(BATCH)
        with other.db.write() as conn:
            core = other.inbox.accept_many(BATCH, conn)
        assert fast == core
        assert [r.duplicate for r in fast] == [True, False, False, True, False]
        assert stored_rows(sqlite_services) == stored_rows(other)
        assert sqlite_services.inbox.get(fast[1].inbox_id).body == b"2"
        claimed = sqlite_services.work.claim("test", limit=10)
        assert sorted(i.payload["inbox_id"] for i in claimed) == [
            1, fast[1].inbox_id, fast[2].inbox_id]
    finally:
        other.close()


def test_fast_path_is_sqlite_only_and_postgres_uses_accept_many(services: Services) -> None:
    writer = BatchedInbox(services.inbox, services.db,
                          Registry(services.db, services.settings.base_url))
    if services.db.is_sqlite:
        assert isinstance(writer._fast, SqliteBatchWriter)
    else:
        assert writer._fast is None
        with pytest.raises(ValueError, match="SQLite"):
            SqliteBatchWriter(services.db)
    first = writer.accept(message(1, "a"))
    assert writer.accept(message(2, "a")) == first.__class__(first.inbox_id, True)
    assert services.inbox.get(first.inbox_id).body == b"1"
    assert services.work.counts() == {"pending": 1}



def test_a_bad_message_fails_alone_and_the_others_are_stored(services: Services) -> None:
    writer = BatchedInbox(services.inbox, services.db,
                          Registry(services.db, services.settings.base_url))
    outcomes: dict[int, object] = {}
    start = threading.Barrier(6)

    def send(n: int) -> None:
        start.wait(30)
        bad = {**message(n, f"bad-{n}"), "body": None}  # NOT NULL: the insert fails
        try:
            outcomes[n] = writer.accept(bad if n == 3 else message(n, f"ok-{n}"))
        except Exception as exc:
            outcomes[n] = exc

    threads = [threading.Thread(target=send, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert isinstance(outcomes.pop(3), sa.exc.IntegrityError)
    assert all(not getattr(o, "duplicate", True) for o in outcomes.values())
    assert len(outcomes) == 5
    assert services.inbox.counts() == {"received": 5}
    assert services.work.counts() == {"pending": 5}
