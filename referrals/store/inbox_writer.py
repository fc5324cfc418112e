"""The inbox's group writer: many inbound messages stored in one short transaction, fast.

A listener that acknowledges only after durable storage spends most of its time committing.
`InboxWriter` keeps one driver connection of its own and runs prebuilt SQL on it (no statement
building per call): BEGIN, one multi-row INSERT of the messages (`ON CONFLICT (dedupe_key) DO
NOTHING RETURNING`), one multi-row INSERT of their work items, COMMIT. A dedupe key already
stored is reported as a duplicate of the first message, and `conflict` says whether the new
body differs from the stored one (same key, different content: a sender reused an id).

On SQLite several processes may write through their own `InboxWriter`s (`shared=True`); they
take an exclusive `flock` on `<database>-inbox.lock` around each transaction, so a waiting
writer is woken by the kernel the moment the lock is free (SQLite's own busy handler sleeps
1 ms, 2 ms, 5 ms...). A group committer may `acquire` the lock before it forms its group, so
what arrives while it waits joins that group.

`storage_problem` says, before a group is written, whether one message cannot be stored as it
is (a value longer than its column, a NUL byte that PostgreSQL text cannot hold), so one bad
message is answered on its own and never fails the others of its group.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from referrals.store.database import Database
from referrals.store.inbox import RECEIVED
from referrals.store.schema import inbox, to_utc, work_items
from referrals.store.work import PENDING

SENDER_MAX = int(inbox.c.sender.type.length or 256)  # type: ignore[attr-defined]
DEDUPE_KEY_MAX = int(inbox.c.dedupe_key.type.length or 512)  # type: ignore[attr-defined]
_INBOX_COLUMNS = ("channel", "sender", "dedupe_key", "received_at", "content_type", "headers",
                  "body", "status")
_WORK_COLUMNS = ("kind", "idempotency_key", "payload", "status", "run_at", "attempts",
                 "max_attempts", "created_at")


@dataclass(frozen=True)
class NewMessage:
    """One message for `InboxWriter.accept_group` (the arguments of `Inbox.accept`)."""

    channel: str
    sender: str
    body: bytes
    dedupe_key: str
    work_kind: str
    content_type: str = ""
    headers: dict[str, Any] | None = None


@dataclass(frozen=True)
class Stored:
    inbox_id: int
    duplicate: bool = False
    #: a duplicate whose body differs from the stored one
    conflict: bool = False


def storage_problem(sender: str, dedupe_key: str | None, *texts: str) -> str | None:
    """Why this message cannot be stored as it is, or None. Checked before a group is written."""
    if len(sender) > SENDER_MAX:
        return f"the sender name is longer than {SENDER_MAX} characters"
    if dedupe_key is not None and len(dedupe_key) > DEDUPE_KEY_MAX:
        return f"the duplicate key is longer than {DEDUPE_KEY_MAX} characters"
    for text in (sender, dedupe_key or "", *texts):
        if "\x00" in text:
            return "a stored value contains a NUL byte"
    return None


class InboxWriter:
    """Group commits of new inbox messages and their work items on a connection of its own."""

    def __init__(self, db: Database, *, shared: bool = False) -> None:
        self.db = db
        self._raw: Any = None
        self._mutex = threading.RLock()
        self._sql: dict[tuple[str, int], str] = {}
        dialect = db.engine.dialect
        self._inbox_bind = {c: inbox.c[c].type.dialect_impl(dialect).bind_processor(dialect)
                            for c in _INBOX_COLUMNS}
        self._work_bind = {c: work_items.c[c].type.dialect_impl(dialect).bind_processor(dialect)
                           for c in _WORK_COLUMNS}
        #: several processes write through writers of their own (SQLite: a file lock)
        self._lock_path = _lock_path(db) if shared else None
        self._lock_file: Any = None
        self._locked = False
        self.commits = 0

    @property
    def uses_lock(self) -> bool:
        return self._lock_path is not None

    def acquire(self) -> None:
        """Take the cross-process write lock now (the caller then gathers what arrived while
        it waited into the next group); `accept_group` or `release` gives it back."""
        if self._lock_path is None or self._locked:
            return
        if self._lock_file is None:
            self._lock_file = open(self._lock_path, "a+b")  # noqa: SIM115 (kept open)
        fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX)
        self._locked = True

    def release(self) -> None:
        if self._locked:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._locked = False

    def close(self) -> None:
        with self._mutex:
            if self._raw is not None:
                with contextlib.suppress(Exception):
                    self._raw.close()
                self._raw = None
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None

    def accept_group(self, messages: list[NewMessage]) -> list[Stored]:
        """Store `messages` (with their work items) in one transaction; results in input order.

        Raises the driver's error after rolling back: nothing of the group is stored then."""
        if not messages:
            return []
        with self._mutex, self._cross_process_lock():
            raw = self._connection()
            try:
                results = self._write(raw.cursor(), messages)
                raw.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    raw.rollback()
                self._drop_connection()
                raise
            self.commits += 1
            return results

    # --- one transaction ---------------------------------------------------------------------

    def _write(self, cursor: Any, messages: list[NewMessage]) -> list[Stored]:
        if self.db.is_sqlite:
            cursor.execute("BEGIN IMMEDIATE")
        first: dict[str, int] = {}  # dedupe key -> index of its first message in the group
        fresh: list[int] = []
        for index, message in enumerate(messages):
            if message.dedupe_key not in first:
                first[message.dedupe_key] = index
                fresh.append(index)
        now = datetime.now(UTC)
        rows = [self._inbox_row(messages[i], now) for i in fresh]
        cursor.execute(self._insert_inbox(len(rows)), [v for row in rows for v in row])
        ids = {str(key): int(row_id) for row_id, key in cursor.fetchall()}
        work = [self._work_row(messages[i].work_kind, ids[messages[i].dedupe_key], now)
                for i in fresh if messages[i].dedupe_key in ids and messages[i].work_kind]
        if work:
            cursor.execute(self._insert_work(len(work)), [v for row in work for v in row])
        stored = self._stored_bodies(cursor, [k for k in first if k not in ids])
        results: list[Stored] = []
        for index, message in enumerate(messages):
            key = message.dedupe_key
            if key in ids and first[key] == index:
                results.append(Stored(ids[key]))
            elif key in ids:  # repeated inside the group: compare with the group's first
                results.append(Stored(ids[key], True, message.body != messages[first[key]].body))
            else:
                stored_id, body = stored[key]
                results.append(Stored(stored_id, True, bytes(body) != message.body))
        return results

    def _stored_bodies(self, cursor: Any, keys: list[str]) -> dict[str, tuple[int, bytes]]:
        if not keys:
            return {}
        marks = ", ".join([self._mark] * len(keys))
        cursor.execute(f"SELECT dedupe_key, id, body FROM inbox WHERE dedupe_key IN ({marks})",
                       keys)
        return {str(key): (int(row_id), bytes(body)) for key, row_id, body in cursor.fetchall()}

    def _inbox_row(self, message: NewMessage, now: datetime) -> list[Any]:
        values = {"channel": message.channel, "sender": message.sender,
                  "dedupe_key": message.dedupe_key, "received_at": now,
                  "content_type": message.content_type, "headers": message.headers or {},
                  "body": message.body, "status": RECEIVED}
        return [_bound(self._inbox_bind[c], values[c]) for c in _INBOX_COLUMNS]

    def _work_row(self, kind: str, inbox_id: int, now: datetime) -> list[Any]:
        values = {"kind": kind, "idempotency_key": f"inbox:{inbox_id}",
                  "payload": {"inbox_id": inbox_id}, "status": PENDING, "run_at": now,
                  "attempts": 0, "max_attempts": 8, "created_at": now}
        return [_bound(self._work_bind[c], values[c]) for c in _WORK_COLUMNS]

    # --- prebuilt statements -----------------------------------------------------------------

    @property
    def _mark(self) -> str:
        return "?" if self.db.is_sqlite else "%s"

    def _values(self, columns: tuple[str, ...], count: int) -> str:
        row = "(" + ", ".join([self._mark] * len(columns)) + ")"
        return ", ".join([row] * count)

    def _insert_inbox(self, count: int) -> str:
        key = ("inbox", count)
        if key not in self._sql:
            self._sql[key] = (f"INSERT INTO inbox ({', '.join(_INBOX_COLUMNS)}) VALUES "
                              f"{self._values(_INBOX_COLUMNS, count)} ON CONFLICT (dedupe_key) "
                              "DO NOTHING RETURNING id, dedupe_key")
        return self._sql[key]

    def _insert_work(self, count: int) -> str:
        key = ("work", count)
        if key not in self._sql:
            self._sql[key] = (f"INSERT INTO work_items ({', '.join(_WORK_COLUMNS)}) VALUES "
                              f"{self._values(_WORK_COLUMNS, count)} ON CONFLICT "
                              "(idempotency_key) DO NOTHING")
        return self._sql[key]

    # --- connection and lock -----------------------------------------------------------------

    def _connection(self) -> Any:
        if self._raw is None:
            self._raw = self.db.engine.raw_connection()
        return self._raw.driver_connection

    def _drop_connection(self) -> None:
        if self._raw is not None:
            with contextlib.suppress(Exception):
                self._raw.invalidate()
            self._raw = None

    @contextlib.contextmanager
    def _cross_process_lock(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


def _bound(processor: Any, value: Any) -> Any:
    if processor is None:
        return value
    if isinstance(value, datetime):
        value = to_utc(value)
    return processor(value)


def _lock_path(db: Database) -> Path | None:
    if not db.is_sqlite:
        return None
    database = db.engine.url.database
    if not database or database == ":memory:":
        return None
    return Path(database).with_name(Path(database).name + "-inbox.lock")


