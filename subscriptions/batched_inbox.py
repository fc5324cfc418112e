"""Group commit for the hook endpoint: request threads hand their notification to one writer
thread per process, which stores whatever is waiting with one transaction (Inbox.accept_many:
one INSERT for the messages, one for their work items) and then wakes them. Each request is
still answered only after its own message is committed. A failing batch is retried one message
at a time, so one bad message cannot fail the others. On SQLite this replaces many writers
queueing on the database lock (behind the driver's sleeping busy handler) with one transaction
per batch."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, BinaryIO

from referrals.store.database import Database
from referrals.store.inbox import Accepted, Inbox
from subscriptions.registry import Registry
from subscriptions.sqlite_batch import SqliteBatchWriter


@dataclass(frozen=True)
class Pending:
    message: dict[str, Any]  # Inbox.accept's arguments
    health: tuple[str, str] | None  # (hook id, notification type) to record with it
    done: Future[Accepted]


class BatchedInbox:
    """Leader/follower group commit: the first request thread to find no writer at work
    becomes the writer, stores everything queued (its own message included) and hands the
    results out; the others wait for theirs. No extra thread, no hand-off when idle.

    Adaptive gathering: request handlers announce themselves with `expecting()` as soon as the
    request arrives. Once the writer may write, it waits (at most `gather_seconds`) for the
    announced requests that are still being parsed, so they share this commit instead of
    paying for the next one. It never waits for requests that are not there: alone, a request
    is committed at once."""

    def __init__(self, inbox: Inbox, db: Database, registry: Registry, *,
                 max_batch: int = 256, timeout: float = 30.0,
                 gather_seconds: float = 0.002, fast_sqlite: bool = True) -> None:
        self.inbox = inbox
        self.db = db
        self.registry = registry
        self.max_batch = max_batch
        self.timeout = timeout
        self.gather_seconds = gather_seconds
        self._waiting: list[Pending] = []
        self._lock = threading.Lock()
        self._queued = threading.Condition(self._lock)
        self._expected = 0  # announced requests not yet queued
        self._announced = threading.local()
        self._writing = False
        self._fast = SqliteBatchWriter(db) if db.is_sqlite and fast_sqlite else None
        self._lock_handle: BinaryIO | None = None
        self._lock_pid = 0

    @contextlib.contextmanager
    def expecting(self) -> Iterator[None]:
        """Around a request that will probably `accept`: the writer may wait for it."""
        with self._lock:
            self._expected += 1
        self._announced.active = True
        try:
            yield
        finally:
            self._withdraw()

    def _withdraw(self) -> None:
        if getattr(self._announced, "active", False):
            self._announced.active = False
            with self._lock:
                self._expected -= 1
                self._queued.notify_all()

    def accept(self, message: dict[str, Any],
               health: tuple[str, str] | None = None) -> Accepted:
        """Store `message` (and record `health`); returns after the commit."""
        mine = Pending(message, health, Future())
        self._withdraw()
        with self._lock:
            self._waiting.append(mine)
            self._queued.notify_all()
            lead = not self._writing
            if lead:
                self._writing = True
        if lead:
            self._write_while_waiting()
        return mine.done.result(timeout=self.timeout)

    def _write_while_waiting(self) -> None:
        try:
            while True:
                with self._exclusive():  # take the batch once we may write: it grows meanwhile
                    batch = self._gather()
                    if not batch:
                        return
                    self._commit(batch)
        except BaseException:
            with self._lock:
                self._writing = False
            raise

    def _gather(self) -> list[Pending]:
        """The next batch, after a short wait for announced requests; none: stop writing."""
        deadline = time.monotonic() + self.gather_seconds
        with self._lock:
            while self._waiting and self._expected > 0 and len(self._waiting) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._queued.wait(left)
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
            if not batch:
                self._writing = False
            return batch

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """On SQLite, queue the writers of all processes on a file lock that wakes the next one
        at once, instead of SQLite's busy handler, which polls with growing sleeps."""
        handle = self._lock_file()
        if handle is None:
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

    def _lock_file(self) -> BinaryIO | None:
        path = self.db.engine.url.database if self.db.is_sqlite else None
        if not path or path == ":memory:":
            return None
        if self._lock_pid != os.getpid():  # one open file per process (also after a fork)
            self._lock_handle = open(f"{path}.hook-writer.lock", "a+b")  # noqa: SIM115
            self._lock_pid = os.getpid()
        return self._lock_handle

    def _commit(self, batch: list[Pending]) -> None:
        try:
            results = self._store(batch)
        except Exception:
            for pending in batch:
                self._commit_one(pending)
            return
        for pending, result in zip(batch, results, strict=True):
            pending.done.set_result(result)

    def _store(self, batch: list[Pending]) -> list[Accepted]:
        messages = [p.message for p in batch]
        if self._fast is not None and all(p.health is None for p in batch):
            return self._fast.store(messages)
        with self.db.write() as conn:
            results = self.inbox.accept_many(messages, conn)
            for pending in batch:
                if pending.health is not None:
                    self.registry.record_notification(*pending.health, None, conn=conn)
        return results

    def _commit_one(self, pending: Pending) -> None:
        try:
            with self.db.write() as conn:
                result = self.inbox.accept(**pending.message, conn=conn)
                if pending.health is not None:
                    self.registry.record_notification(*pending.health, None, conn=conn)
        except Exception as exc:
            pending.done.set_exception(exc)
            return
        pending.done.set_result(result)
