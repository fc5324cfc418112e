"""Group commit of hook notifications: Inbox.accept_many (the core addition it uses) and the
leader/follower writer under concurrent requests, on both databases."""

from __future__ import annotations

import threading

from refloop.services import Services
from subscriptions.batched_inbox import BatchedInbox
from subscriptions.registry import Registry


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
