"""The work queue on SQLite and PostgreSQL: leases, retries with backoff, quarantine, reaping,
and several OS processes claiming at once (every item done exactly once, a killed worker's item
done once by another)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from referrals.errors import InboundError, PeerError, RetryLater
from referrals.store import connect
from referrals.store.quarantine import Quarantine
from referrals.store.schema import work_items
from referrals.store.work import WorkItem, WorkQueue
from referrals.worker import Worker
from refloop.services import Services

CHILD = Path(__file__).with_name("work_child.py")
ROOT = Path(__file__).resolve().parents[3]


def row(services: Services, item_id: int) -> dict:
    found = services.work.try_get(item_id)
    assert found is not None
    return found


def make_due(services: Services, item_id: int) -> None:
    with services.db.write() as c:
        c.execute(work_items.update().where(work_items.c.id == item_id)
                  .values(run_at=datetime.now(UTC) - timedelta(seconds=1)))


def test_enqueue_is_idempotent_on_the_key(services: Services) -> None:
    first = services.work.enqueue("test.k", {"n": 1}, key="same")
    again = services.work.enqueue("test.k", {"n": 2}, key="same")
    assert first is not None and again is None
    assert row(services, first)["payload"] == {"n": 1}
    assert services.work.counts() == {"pending": 1}


def test_claim_leases_and_complete_checks_the_owner(services: Services) -> None:
    item_id = services.work.enqueue("test.k", {}, key="a")
    later = services.work.enqueue("test.k", {}, key="b",
                                  run_at=datetime.now(UTC) + timedelta(hours=1))
    claimed = services.work.claim("w1", kinds=["test.k"])
    assert [i.id for i in claimed] == [item_id]  # the future item is not due
    assert services.work.claim("w2", kinds=["test.k"]) == []  # leased to w1
    assert services.work.claim("w3", kinds=["other"]) == []
    assert not services.work.complete(claimed[0], "w2")
    assert services.work.complete(claimed[0], "w1")
    assert not services.work.complete(claimed[0], "w1")  # done already
    done = row(services, item_id)
    assert done["status"] == "done" and done["attempts"] == 1 and done["done_at"] is not None
    assert row(services, later)["status"] == "pending"


def test_expired_lease_returns_the_item(database_url: str) -> None:
    db = connect(database_url)
    now = [datetime.now(UTC)]
    queue = WorkQueue(db, Quarantine(db), lease_seconds=30, clock=lambda: now[0])
    queue.enqueue("test.k", {}, key="x")
    first = queue.claim("crashed")
    now[0] += timedelta(seconds=29)
    assert queue.claim("other") == []
    now[0] += timedelta(seconds=2)  # the lease ran out: the owner crashed
    second = queue.claim("other")
    assert [i.id for i in second] == [first[0].id] and second[0].attempts == 2
    assert not queue.complete(first[0], "crashed")  # the first owner lost its lease
    assert queue.complete(second[0], "other")
    db.dispose()


def test_retries_back_off_exponentially_then_quarantine(services: Services) -> None:
    queue = services.work
    item_id = queue.enqueue("test.flaky", {"inbox_id": None, "x": 1}, key="flaky",
                            max_attempts=4)
    calls: list[int] = []

    def flaky(item: WorkItem) -> None:
        calls.append(item.attempts)
        raise PeerError("EHR answered 503")

    worker = Worker(queue, {"test.flaky": flaky}, name="w")
    for attempt in range(1, 4):
        before = datetime.now(UTC)
        assert worker.run_once() == 1
        current = row(services, item_id)
        assert current["status"] == "pending" and current["attempts"] == attempt
        assert current["lease_owner"] is None and "503" in current["last_error"]
        delay = (current["run_at"] - before).total_seconds()
        nominal = queue.base_backoff * 2 ** (attempt - 1)
        assert nominal * 0.8 - 0.01 <= delay <= nominal * 1.2 + 1.0, (attempt, delay)
        assert worker.run_once() == 0  # not due yet
        make_due(services, item_id)
    assert worker.run_once() == 1
    assert calls == [1, 2, 3, 4]
    final = row(services, item_id)
    assert final["status"] == "quarantined" and final["attempts"] == 4
    [entry] = services.quarantine.list()
    assert entry.origin == "work" and entry.kind == "test.flaky"
    assert entry.work_item_id == item_id and "EHR answered 503" in entry.reason
    assert json.loads(entry.original) == {"inbox_id": None, "x": 1}
    assert worker.run_once() == 0


def test_backoff_is_capped(services: Services) -> None:
    queue = services.work
    assert queue.backoff(1) <= queue.base_backoff * 1.2
    assert queue.backoff(40) <= queue.max_backoff * 1.2
    assert queue.backoff(5) >= queue.base_backoff * 16 * 0.8


def test_bad_input_is_quarantined_at_once_and_retry_later_spends_no_attempt(
        services: Services) -> None:
    accepted = services.inbox.accept("test", "sender-1", b"\x00garbage", work_kind="test.parse",
                                     content_type="application/octet-stream")
    waits: list[int] = []

    def parse(item: WorkItem) -> None:
        if not waits:
            waits.append(item.attempts)
            raise RetryLater("waiting for the ServiceRequest", delay_seconds=0)
        raise InboundError("not a FHIR resource")

    worker = Worker(services.work, {"test.parse": parse})
    assert worker.run_once() == 1
    with services.db.read() as c:
        pending = c.execute(sa.select(work_items).where(work_items.c.kind == "test.parse")
                            ).mappings().one()
    assert pending["status"] == "pending" and pending["attempts"] == 0
    assert pending["payload"] == {"inbox_id": accepted.inbox_id}
    assert worker.drain() == 1
    assert services.work.counts() == {"quarantined": 1}
    [entry] = services.quarantine.list()
    assert entry.inbox_id == accepted.inbox_id and "not a FHIR resource" in entry.reason


def test_non_retryable_peer_error_quarantines_at_once(services: Services) -> None:
    services.work.enqueue("test.peer", {}, key="p")

    def refuse(_item: WorkItem) -> None:
        raise PeerError("payer rejected the credentials", retryable=False)

    assert Worker(services.work, {"test.peer": refuse}).drain() == 1
    assert services.work.counts() == {"quarantined": 1}


def test_a_value_the_database_refuses_quarantines_at_once(services: Services) -> None:
    """A DataError (a NUL in text, a value longer than its column...) comes from the input:
    retrying cannot help, so the item goes to quarantine at its first attempt, with the reason,
    instead of failing for minutes of backoff."""
    services.work.enqueue("test.store", {"inbox_id": 3}, key="s")

    def store(_item: WorkItem) -> None:
        with services.db.write() as c:
            if services.db.dialect == "postgresql":  # a real refusal: text cannot hold NUL
                c.execute(sa.text("SELECT CAST(:v AS text)"), {"v": "a\x00b"})
            raise sa.exc.DataError("INSERT ...", {}, ValueError("value too long for its column"))

    assert Worker(services.work, {"test.store": store}).drain() == 1
    with services.db.read() as c:
        row = c.execute(sa.select(work_items.c.status, work_items.c.attempts)).one()
    assert tuple(row) == ("quarantined", 1)
    [entry] = services.quarantine.list()
    assert entry.inbox_id == 3 and "database refused" in entry.reason


def test_reap_quarantines_an_expired_final_attempt(database_url: str) -> None:
    db = connect(database_url)
    now = [datetime.now(UTC)]
    queue = WorkQueue(db, Quarantine(db), lease_seconds=30, clock=lambda: now[0])
    item_id = queue.enqueue("test.k", {"inbox_id": 7}, key="last", max_attempts=1)
    keep_id = queue.enqueue("test.k", {}, key="not-last", max_attempts=2)
    assert len(queue.claim("dies-on-it")) == 2
    now[0] += timedelta(seconds=29)
    assert queue.reap() == 0  # leases still held
    now[0] += timedelta(seconds=2)
    assert queue.reap() == 1
    assert queue.try_get(item_id)["status"] == "quarantined"
    assert queue.try_get(keep_id)["status"] == "pending"  # it has an attempt left
    [entry] = Quarantine(db).list()
    assert entry.work_item_id == item_id and entry.inbox_id == 7
    assert "lease expired" in entry.reason
    assert [i.id for i in queue.claim("next")] == [keep_id]
    db.dispose()


# -- several OS processes ---------------------------------------------------------------------

def _completions(url: str) -> list[tuple[int, str]]:
    db = connect(url)
    with db.read() as c:
        rows = c.execute(sa.text("SELECT item_id, worker FROM completions")).all()
    db.dispose()
    return [(int(r[0]), str(r[1])) for r in rows]


def _create_completions(url: str) -> None:
    db = connect(url)
    with db.write() as c:
        c.execute(sa.text("CREATE TABLE completions (item_id INTEGER NOT NULL, "
                          "worker VARCHAR(200) NOT NULL)"))
    db.dispose()


def _child(url: str, mode: str, lease: float, signal_dir: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(CHILD), url, mode, str(lease), str(signal_dir)],
                            env=env, stderr=subprocess.PIPE)


def _wait_for(predicate: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def test_processes_claiming_at_once_do_every_item_exactly_once(
        database_url: str, services: Services, tmp_path: Path) -> None:
    _create_completions(database_url)
    total = 240
    ids = {services.work.enqueue("test.record", {"n": n}, key=f"item-{n}") for n in range(total)}
    processes = 3
    children = [_child(database_url, "drain", 60, tmp_path) for _ in range(processes)]
    _wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == processes, "workers to start")
    (tmp_path / "go").write_text("")
    for child in children:
        _out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err.decode()
    done = _completions(database_url)
    assert sorted(item for item, _ in done) == sorted(ids)  # each exactly once
    assert len({worker for _, worker in done}) >= 2, "the processes did not overlap"
    assert services.work.counts() == {"done": total}


def test_killed_worker_item_is_done_once_by_another(
        database_url: str, services: Services, tmp_path: Path) -> None:
    _create_completions(database_url)
    lease = 3.0
    item_id = services.work.enqueue("test.hang", {}, key="hang")
    child = _child(database_url, "hang", lease, tmp_path)
    try:
        _wait_for(lambda: (tmp_path / "started").exists(), "the worker to take the item")
        holder = (tmp_path / "started").read_text()
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    held = row(services, item_id)
    assert held["status"] == "pending" and held["lease_owner"] == holder
    assert held["attempts"] == 1

    db = connect(database_url)
    queue = WorkQueue(db, Quarantine(db), lease_seconds=lease)

    def record(item: WorkItem) -> None:
        with db.write() as c:
            c.execute(sa.text("INSERT INTO completions (item_id, worker) VALUES (:i, 'second')"),
                      {"i": item.id})

    second = Worker(queue, {"test.hang": record}, name="second")
    _wait_for(lambda: second.run_once() > 0, "the lease to expire", timeout=lease * 10)
    db.dispose()
    assert _completions(database_url) == [(item_id, "second")]
    final = row(services, item_id)
    assert final["status"] == "done" and final["attempts"] == 2
    assert services.quarantine.list() == []


class Bulky:
    """A handler that declares a larger batch than the default (10)."""

    batch_size = 25

    def __init__(self, seen: list[int]) -> None:
        self.seen = seen

    def __call__(self, item: WorkItem) -> None:
        self.seen.append(item.id)


def test_a_kind_is_claimed_by_its_handlers_batch_size_unless_worker_batch_is_set(
        services: Services) -> None:
    small = [services.work.enqueue("test.small", {}, key=f"s{n}") for n in range(3)]
    big = [services.work.enqueue("test.big", {}, key=f"b{n}") for n in range(30)]
    seen: list[int] = []
    handlers = {"test.small": lambda item: seen.append(item.id), "test.big": Bulky(seen)}
    worker = Worker(services.work, handlers, name="w1")
    # the first claim takes the 10 first due (3 small, 7 big); being full, it is topped up
    # with 18 more of the kind that asks for 25
    assert worker.run_once() == 28
    assert seen == [*small, *big[:25]]          # in claim order, each kind in its due order
    assert worker.run_once() == 5 and seen[28:] == big[25:]
    assert worker.run_once() == 0
    more = [services.work.enqueue("test.big", {}, key=f"c{n}") for n in range(12)]
    assert Worker(services.work, handlers, name="w2", batch=5).run_once() == 5  # the override
    assert seen[33:] == more[:5]


@pytest.mark.parametrize("extra", [2**64, float("nan"), "a\ud800"],
                         ids=["big-int", "nan", "surrogate"])
def test_a_value_no_json_column_holds_quarantines_at_once(services: Services, extra: Any) -> None:
    """A resource a JSON column cannot hold unchanged (from a peer's reply, say) is refused on
    both databases, at the first attempt, with the reason; NaN is never stored as null."""
    services.work.enqueue("test.store", {"inbox_id": 4}, key="j")

    def store(_item: WorkItem) -> None:
        services.resources.put({"resourceType": "Basic", "id": "b1", "extra": [extra]})

    assert Worker(services.work, {"test.store": store}).drain() == 1
    assert services.work.counts() == {"quarantined": 1}
    [entry] = services.quarantine.list()
    assert "cannot be stored as JSON" in entry.reason and entry.inbox_id == 4
    assert services.resources.try_get("Basic", "b1") is None


def test_a_sqlite_row_the_json_module_wrote_with_nan_still_reads(sqlite_services: Services
                                                                 ) -> None:
    """Before JSON columns were written with orjson, the json module wrote NaN and Infinity into
    SQLite stores; orjson refuses to read them, which made such a row unreadable."""
    sqlite_services.resources.put({"resourceType": "Basic", "id": "b1", "v": 1.5})
    with sqlite_services.db.write() as c:
        c.exec_driver_sql("UPDATE resources SET body = ?", (json.dumps(
            {"resourceType": "Basic", "id": "b1", "v": [float("nan"), float("inf")]}),))
    body = sqlite_services.resources.try_get("Basic", "b1")
    assert body is not None and body["v"][1] == float("inf") and body["v"][0] != body["v"][0]
