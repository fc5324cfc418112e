"""The hook writer's fast path on SQLite: a batch of notifications stored with the sqlite3 driver
directly, with the rows `Inbox.accept_many` would write (an inbox row per new message, a pending
work item for each that starts work, duplicates reported as the first message).

Why: the batch is written while every other writer waits (SQLite has one writer), and Python
work inside that window is stretched by the GIL of a busy process. Compiling and executing the
same statements through SQLAlchemy costs about 1 ms of CPU per batch; the driver needs about
0.15 ms. Column names come from the core's tables and values go through the columns' own bind
processors, so stored values are the ones SQLAlchemy would store. PostgreSQL, and batches that
also record a registration's health, use `Inbox.accept_many`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from referrals.store.database import Database
from referrals.store.inbox import RECEIVED, Accepted
from referrals.store.schema import inbox, work_items
from referrals.store.work import PENDING

INBOX_COLUMNS = ("channel", "sender", "dedupe_key", "received_at", "content_type", "headers",
                 "body", "status")
WORK_COLUMNS = ("kind", "idempotency_key", "payload", "status", "run_at", "attempts",
                "max_attempts", "created_at")
MAX_ATTEMPTS = 8  # WorkQueue.enqueue_many's value
KEYS_PER_SELECT = 500  # below SQLite's bound-parameter limit


class SqliteBatchWriter:
    def __init__(self, db: Database) -> None:
        if not db.is_sqlite:
            raise ValueError("SqliteBatchWriter needs a SQLite database")
        self.db = db
        dialect = db.engine.dialect
        self._inbox_bind = _processors(inbox, INBOX_COLUMNS, dialect)
        self._work_bind = _processors(work_items, WORK_COLUMNS, dialect)
        self._insert_message = (
            f"INSERT INTO {inbox.name} ({', '.join(INBOX_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(INBOX_COLUMNS))}) RETURNING {inbox.c.id.name}")
        self._insert_work = (
            f"INSERT INTO {work_items.name} ({', '.join(WORK_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(WORK_COLUMNS))}) "
            f"ON CONFLICT ({work_items.c.idempotency_key.name}) DO NOTHING")

    def store(self, messages: Sequence[dict[str, Any]]) -> list[Accepted]:
        """Store `messages` (Inbox.accept's arguments each) in one committed transaction."""
        now = datetime.now(UTC)
        rows = [_apply(self._inbox_bind, (
            m["channel"], m["sender"], m.get("dedupe_key"), now, m.get("content_type", ""),
            m.get("headers") or {}, m["body"], m.get("status", RECEIVED))) for m in messages]
        raw = self.db.engine.raw_connection()
        try:
            cursor = raw.driver_connection.cursor()  # type: ignore[union-attr]
            cursor.execute("BEGIN IMMEDIATE")
            try:
                results = self._write(cursor, messages, rows, now)
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            finally:
                cursor.close()
        finally:
            raw.close()
        return results

    def _write(self, cursor: Any, messages: Sequence[dict[str, Any]],
               rows: list[tuple[Any, ...]], now: datetime) -> list[Accepted]:
        known = self._known(cursor, [m["dedupe_key"] for m in messages
                                     if m.get("dedupe_key") is not None])
        results: list[Accepted] = []
        work: list[tuple[Any, ...]] = []
        for message, row in zip(messages, rows, strict=True):
            key = message.get("dedupe_key")
            if key is not None and key in known:
                results.append(Accepted(known[key], True))
                continue
            inbox_id = int(cursor.execute(self._insert_message, row).fetchone()[0])
            if key is not None:
                known[key] = inbox_id
            results.append(Accepted(inbox_id, False))
            if message.get("work_kind"):
                payload = {"inbox_id": inbox_id, **(message.get("work_payload") or {})}
                work.append(_apply(self._work_bind, (
                    message["work_kind"], f"inbox:{inbox_id}", payload, PENDING, now, 0,
                    MAX_ATTEMPTS, now)))
        if work:
            cursor.executemany(self._insert_work, work)
        return results

    def _known(self, cursor: Any, keys: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(keys), KEYS_PER_SELECT):
            chunk = keys[start:start + KEYS_PER_SELECT]
            query = (f"SELECT {inbox.c.dedupe_key.name}, {inbox.c.id.name} FROM {inbox.name} "
                     f"WHERE {inbox.c.dedupe_key.name} IN ({', '.join('?' * len(chunk))})")
            found.update((key, int(row_id)) for key, row_id in cursor.execute(query, chunk))
        return found


Processor = Callable[[Any], Any] | None


def _processors(table: sa.Table, names: Sequence[str], dialect: sa.Dialect) -> list[Processor]:
    return [table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names]


def _apply(processors: list[Processor], values: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(value if process is None else process(value)
                 for process, value in zip(processors, values, strict=True))
