"""Group commit for the hook endpoint, in two forms with one commit step:

- `BatchedInbox.accept` (request threads: Flask): threads queue their notification and one of
  them at a time, the writer, stores a whole batch with one transaction and wakes the others;
- `ThreadWriter.submit` (the asyncio HTTP edge): the event loop queues each notification for a
  writer thread, which commits everything queued in one transaction and wakes the loop once
  per batch; the loop goes on reading requests meanwhile, and those form the next batch.
  (Committing on the loop's own thread was measured too: the loop then reads nothing while a
  commit, or another process's commit, is under way, and batches stayed half as large; about
  half the rate, see docs/subscriptions.md.)

Each request is still answered only after its own message is committed. A failing batch is
retried one message at a time, so one bad message cannot fail the others.

On SQLite (one writer at a time for the whole database) the writers of all processes queue on a
file lock, and a writer takes its batch only once it holds the lock, so the requests that arrive
while another process commits join the next commit; the batch is written with the sqlite3
driver (sqlite_batch.py). Elsewhere it goes through Inbox.accept_many.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from referrals.store.database import Database
from referrals.store.inbox import Accepted, Inbox
from subscriptions.registry import Registry
from subscriptions.sqlite_batch import SqliteBatchWriter


@dataclass
class Pending:
    message: dict[str, Any]  # Inbox.accept's arguments
    health: tuple[str, str] | None  # (hook id, notification type) to record with it
    woken: threading.Event = field(default_factory=threading.Event)
    result: Accepted | None = None  # set (then woken) once committed
    error: Exception | None = None  # ... or once it failed for good
    lead: bool = False  # set (then woken) to make the waiting thread the next writer
    future: asyncio.Future[Accepted] | None = None  # ThreadWriter's, settled on its loop

    def settle(self, result: Accepted | None = None, error: Exception | None = None) -> None:
        self.result, self.error = result, error
        self.woken.set()


class BatchedInbox:
    """Leader/follower group commit without an extra thread: a request that finds no writer
    at work becomes the writer, commits one batch (its own message included) and hands the
    writing on to the oldest waiting request, so no request waits behind more than the batches
    ahead of it."""

    def __init__(self, inbox: Inbox, db: Database, registry: Registry, *,
                 max_batch: int = 256, timeout: float = 30.0,
                 fast_sqlite: bool = True) -> None:
        self.inbox = inbox
        self.db = db
        self.registry = registry
        self.max_batch = max_batch
        self.timeout = timeout
        self._waiting: list[Pending] = []
        self._lock = threading.Lock()
        self._writing = False
        self._fast = SqliteBatchWriter(db) if db.is_sqlite and fast_sqlite else None
        self._lock_handle: BinaryIO | None = None
        self._lock_pid = 0

    def accept(self, message: dict[str, Any],
               health: tuple[str, str] | None = None) -> Accepted:
        """Store `message` (and record `health`); returns after the commit."""
        mine = Pending(message, health)
        with self._lock:
            self._waiting.append(mine)
            lead = not self._writing
            if lead:
                self._writing = True
        deadline = time.monotonic() + self.timeout
        while True:
            if lead:
                self._write_one_batch()
            if not mine.woken.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError("the notification was not stored in time")
            if mine.error is not None:
                raise mine.error
            if mine.result is not None:
                return mine.result
            mine.woken.clear()
            lead = mine.lead
            mine.lead = False

    def _write_one_batch(self) -> None:
        """Commit the next batch, then hand the writing on to the oldest waiting request, so
        a writer answers its own request after one batch rather than after the whole queue."""
        try:
            with self._exclusive():  # take the batch once we may write: it grows meanwhile
                batch = self._gather()
                if not batch:
                    return
                self._commit(batch)
        except BaseException:
            with self._lock:
                self._writing = False
            raise
        with self._lock:
            if not self._waiting:
                self._writing = False
                return
            successor = self._waiting[0]
            successor.lead = True
        successor.woken.set()

    def _gather(self) -> list[Pending]:
        """The next batch; none: stop writing."""
        with self._lock:
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
            pending.settle(result)

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
            pending.settle(error=exc)
            return
        pending.settle(result)


class ThreadWriter:
    """Group commit for an asyncio event loop on a writer thread of its own: `submit` queues a
    message and returns a future of the loop, settled (one wake-up of the loop per batch) once
    the message is committed. While one batch commits, the loop goes on reading requests, which
    form the next batch; a writer waiting for another process's commit holds up only itself."""

    def __init__(self, batched: BatchedInbox, loop: asyncio.AbstractEventLoop) -> None:
        self.batched = batched
        self.loop = loop
        self._queued: list[Pending] = []
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        self.commits = 0

    def submit(self, message: dict[str, Any],
               health: tuple[str, str] | None = None) -> asyncio.Future[Accepted]:
        future: asyncio.Future[Accepted] = self.loop.create_future()
        pending = Pending(message, health, future=future)
        with self._ready:
            self._queued.append(pending)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hook-writer",
                                                 daemon=True)
                self._thread.start()
            self._ready.notify()
        return future

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queued:
                    self._ready.wait()
            with self.batched._exclusive():  # the batch grows while we wait for the lock
                with self._ready:
                    batch = self._queued[: self.batched.max_batch]
                    del self._queued[: self.batched.max_batch]
                self.batched._commit(batch)
            self.commits += 1
            self.loop.call_soon_threadsafe(_settle_futures, batch)


def _settle_futures(batch: list[Pending]) -> None:
    for pending in batch:
        future = pending.future
        if future is None or future.done():
            continue
        if pending.error is not None:
            future.set_exception(pending.error)
        else:
            future.set_result(pending.result)  # type: ignore[arg-type]
