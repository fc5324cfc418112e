"""The work queue: leased claims safe across processes, backoff, quarantine after the last try.

PostgreSQL claims with `FOR UPDATE SKIP LOCKED`; SQLite claims inside `BEGIN IMMEDIATE`, which
serialises claimers across processes. A lease that expires (crashed worker) frees the item; the
lease owner is checked on completion so a late worker cannot finish an item twice.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from referrals.store.database import Database
from referrals.store.quarantine import Quarantine
from referrals.store.schema import work_items

PENDING, DONE, QUARANTINED = "pending", "done", "quarantined"


@dataclass(frozen=True)
class WorkItem:
    id: int
    kind: str
    idempotency_key: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    lease_owner: str | None
    last_error: str | None = None


class WorkQueue:
    def __init__(self, db: Database, quarantine: Quarantine, *, lease_seconds: float = 60.0,
                 base_backoff: float = 2.0, max_backoff: float = 3600.0,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.db = db
        #: the queue's time (run_at, leases, backoff); tests of timers hand in a fake clock
        self.clock = clock or _now
        self.quarantine = quarantine
        self.lease_seconds = lease_seconds
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff

    def enqueue(self, kind: str, payload: dict[str, Any], *, key: str,
                run_at: datetime | None = None, max_attempts: int = 8,
                conn: Connection | None = None) -> int | None:
        """Add work once per idempotency key; returns None when the key was already there."""
        now = self.clock()
        values = {"kind": kind, "idempotency_key": key, "payload": payload, "status": PENDING,
                  "run_at": run_at or now, "attempts": 0, "max_attempts": max_attempts,
                  "created_at": now}
        with self.db.using(conn) as c:
            return c.execute(self._insert_one, values).scalar()

    @functools.cached_property
    def _insert_one(self) -> Any:
        """Built once, values bound at execution: SQLAlchemy compiles and caches it once
        (building `.values(...)` per call cost more than the insert itself)."""
        insert = (postgresql.insert(work_items) if self.db.dialect == "postgresql"
                  else sqlite.insert(work_items))
        return (insert.on_conflict_do_nothing(index_elements=["idempotency_key"])
                .returning(work_items.c.id))

    def enqueue_many(self, items: list[tuple[str, dict[str, Any], str]], *,
                     conn: Connection) -> None:
        """Add several (kind, payload, key) items in one statement (keys already present are
        skipped, as in enqueue). Used by batched inbound writers."""
        if not items:
            return
        now = self.clock()
        insert = (postgresql.insert(work_items) if self.db.dialect == "postgresql"
                  else sqlite.insert(work_items))
        conn.execute(insert.on_conflict_do_nothing(index_elements=["idempotency_key"]), [
            {"kind": kind, "idempotency_key": key, "payload": payload, "status": PENDING,
             "run_at": now, "attempts": 0, "max_attempts": 8, "created_at": now}
            for kind, payload, key in items])

    def claim(self, owner: str, *, limit: int = 10, kinds: Iterable[str] | None = None
              ) -> list[WorkItem]:
        """Lease up to `limit` due items to `owner`."""
        now = self.clock()
        due = (sa.select(work_items.c.id)
               .where(work_items.c.status == PENDING, work_items.c.run_at <= now,
                      work_items.c.attempts < work_items.c.max_attempts,
                      sa.or_(work_items.c.lease_expires.is_(None),
                             work_items.c.lease_expires < now))
               .order_by(work_items.c.run_at, work_items.c.id).limit(limit))
        if kinds is not None:
            due = due.where(work_items.c.kind.in_(list(kinds)))
        if self.db.dialect == "postgresql":
            due = due.with_for_update(skip_locked=True)
        statement = (work_items.update().where(work_items.c.id.in_(due.scalar_subquery()))
                     .values(lease_owner=owner,
                             lease_expires=now + timedelta(seconds=self.lease_seconds),
                             attempts=work_items.c.attempts + 1)
                     .returning(*work_items.c))
        with self.db.write(durable=False) as c:  # a lost lease leaves its items pending
            rows = c.execute(statement).mappings().all()
        return sorted((_item(r) for r in rows), key=lambda item: item.id)

    def complete(self, item: WorkItem, owner: str, conn: Connection | None = None) -> bool:
        """Mark done if `owner` still holds the lease; False when the lease was lost."""
        with self.db.using(conn) as c:
            return self.complete_many([item], owner, c) == 1

    def complete_many(self, items: list[WorkItem], owner: str, conn: Connection) -> int:
        """`complete` for several items in one statement (batch handlers); how many were done."""
        if not items:
            return 0
        return int(conn.execute(
            work_items.update()
            .where(work_items.c.id.in_([item.id for item in items]),
                   work_items.c.lease_owner == owner, work_items.c.status == PENDING)
            .values(status=DONE, done_at=self.clock(), lease_owner=None, lease_expires=None)
        ).rowcount)

    def postpone_many(self, items: list[WorkItem], owner: str, delay: float, note: str,
                      conn: Connection) -> int:
        """`postpone` for several items in the caller's transaction (a batch handler's items
        that must wait); how many were postponed."""
        if not items:
            return 0
        return int(conn.execute(
            work_items.update()
            .where(work_items.c.id.in_([item.id for item in items]),
                   work_items.c.lease_owner == owner, work_items.c.status == PENDING)
            .values(run_at=self.clock() + timedelta(seconds=delay), lease_owner=None,
                    lease_expires=None, attempts=work_items.c.attempts - 1,
                    last_error=note[:4000])
        ).rowcount)

    def fail(self, item: WorkItem, owner: str, error: str, *,
             retry_in: float | None = None, final: bool = False) -> str:
        """Record a failed attempt: back off and retry, or quarantine after the last attempt."""
        with self.db.write() as c:
            current = c.execute(sa.select(work_items.c.attempts, work_items.c.max_attempts,
                                          work_items.c.lease_owner, work_items.c.status)
                                .where(work_items.c.id == item.id)).first()
            if current is None or current.lease_owner != owner or current.status != PENDING:
                return "lost"
            if final or current.attempts >= current.max_attempts:
                self._quarantine(c, item, error)
                return QUARANTINED
            delay = retry_in if retry_in is not None else self.backoff(current.attempts)
            c.execute(work_items.update().where(work_items.c.id == item.id).values(
                run_at=self.clock() + timedelta(seconds=delay), lease_owner=None,
                lease_expires=None, last_error=error[:4000]))
            return "retry"

    def postpone(self, item: WorkItem, owner: str, delay: float, note: str) -> bool:
        """Run again later without spending an attempt (waiting on something, not failing)."""
        with self.db.write() as c:
            return self.postpone_many([item], owner, delay, note, c) == 1

    def reap(self) -> int:
        """Quarantine items whose last attempt's lease expired (the worker died on it)."""
        now = self.clock()
        with self.db.write() as c:
            rows = c.execute(sa.select(work_items).where(
                work_items.c.status == PENDING,
                work_items.c.attempts >= work_items.c.max_attempts,
                sa.or_(work_items.c.lease_expires.is_(None), work_items.c.lease_expires < now),
            ).limit(500)).mappings().all()
            for row in rows:
                self._quarantine(c, _item(row), row["last_error"] or
                                 "the last attempt's lease expired (worker stopped)")
        return len(rows)

    def backoff(self, attempts: int) -> float:
        delay = min(self.max_backoff, self.base_backoff * 2.0 ** max(0, attempts - 1))
        return delay * random.uniform(0.8, 1.2)

    def counts(self) -> dict[str, int]:
        with self.db.read() as c:
            rows = c.execute(sa.select(work_items.c.status, sa.func.count())
                             .group_by(work_items.c.status)).all()
        return {status: count for status, count in rows}

    def try_get(self, item_id: int) -> dict[str, Any] | None:
        with self.db.read() as c:
            row = c.execute(sa.select(work_items).where(work_items.c.id == item_id)).first()
        return dict(row._mapping) if row else None

    def _quarantine(self, c: Connection, item: WorkItem, error: str) -> None:
        c.execute(work_items.update().where(work_items.c.id == item.id).values(
            status=QUARANTINED, lease_owner=None, lease_expires=None, last_error=error[:4000]))
        self.quarantine.put(origin="work", kind=item.kind, reason=error[:4000],
                            original=json.dumps(item.payload).encode(),
                            content_type="application/json", work_item_id=item.id,
                            inbox_id=item.payload.get("inbox_id"), conn=c)


def _item(row: Any) -> WorkItem:
    return WorkItem(id=int(row["id"]), kind=row["kind"], idempotency_key=row["idempotency_key"],
                    payload=row["payload"], attempts=int(row["attempts"]),
                    max_attempts=int(row["max_attempts"]), lease_owner=row["lease_owner"],
                    last_error=row["last_error"])


def _now() -> datetime:
    return datetime.now(UTC)
