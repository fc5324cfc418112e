"""Workers: claim due work, run its handler, complete, back off or quarantine."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.exc import DataError

from referrals.errors import InboundError, PeerError, RetryLater
from referrals.store.work import WorkItem, WorkQueue

Handler = Callable[[WorkItem], None]
#: items a worker claims per round for a kind whose handler declares no `batch_size`
DEFAULT_BATCH = 10
#: told of each item handled: (kind, outcome, seconds); outcome done, retry, quarantined,
#: postponed or lost (metrics; refloop/wiring connects it)
Observer = Callable[[str, str, float], None]

log = logging.getLogger("refloop.worker")


def refused(exc: DataError) -> str:
    """Why the database refused a value, without the value (the driver's first line; the rest
    may quote the data, which stays out of logs)."""
    first = str(exc.orig).strip().splitlines()[:1] or [type(exc.orig).__name__]
    return f"the database refused a value: {first[0][:200]}"


def batch_size(handler: Handler, override: int = 0) -> int:
    """Items of one kind a worker claims per round: the operator's `override` (worker_batch)
    when set, else the `batch_size` the handler declares, else DEFAULT_BATCH."""
    if override > 0:
        return override
    declared = getattr(handler, "batch_size", None)
    return declared if isinstance(declared, int) and declared > 0 else DEFAULT_BATCH


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class Worker:
    queue: WorkQueue
    handlers: dict[str, Handler]
    name: str = field(default_factory=worker_name)
    #: items claimed per round for every kind (worker_batch); 0: each kind's own `batch_size`
    batch: int = 0
    observe: Observer | None = None

    def run_once(self) -> int:
        """Claim and run one batch; returns how many items were processed."""
        items = self.claim()
        self.prepare(items)
        done = self.handle_many(items)
        for item in items:
            if item.id not in done:
                self.process(item)
        return len(items)

    def claim(self) -> list[WorkItem]:
        """The round's items, in claim order: the due items of every kind (up to `batch`, or
        DEFAULT_BATCH), then, when that claim was full, more of each kind it holds whose handler
        declares a larger `batch_size`, up to that size. Each kind keeps its due order."""
        limit = self.batch or DEFAULT_BATCH
        items = self.queue.claim(self.name, limit=limit, kinds=self.handlers.keys())
        if self.batch or len(items) < limit:
            return items  # the operator's size for every kind, or nothing more is due
        more: list[WorkItem] = []
        for kind, held in Counter(item.kind for item in items).items():
            wanted = batch_size(self.handlers[kind]) - held
            if wanted > 0:
                more += self.queue.claim(self.name, limit=wanted, kinds=[kind])
        return sorted([*items, *more], key=lambda item: item.id) if more else items

    def handle_many(self, items: list[WorkItem]) -> set[int]:
        """Give a handler with a `handle_many(items)` method all its items of the batch at once.
        It applies what it can in its own transaction, completes those items there
        (`WorkQueue.complete_many`) and returns their ids; the others run one by one afterwards,
        with the usual retry and quarantine rules. When it raises, they all run one by one."""
        done: set[int] = set()
        for kind in dict.fromkeys(item.kind for item in items):
            many = getattr(self.handlers[kind], "handle_many", None)
            if many is None:
                continue
            try:
                done |= set(many([item for item in items if item.kind == kind]))
            except Exception:
                log.exception("a batch handler failed; its items run one by one",
                              extra={"kind": kind})
        return done

    def prepare(self, items: list[WorkItem]) -> None:
        """Give a handler with a `prepare(items)` method its items of the batch before they run
        one by one (e.g. to fetch what they need concurrently). Best effort: when it fails, each
        item still runs and its handler does the work itself."""
        for kind in dict.fromkeys(item.kind for item in items):
            prepare = getattr(self.handlers[kind], "prepare", None)
            if prepare is None:
                continue
            try:
                prepare([item for item in items if item.kind == kind])
            except Exception:
                log.exception("preparing a batch failed; its items run unprepared",
                              extra={"kind": kind})

    def process(self, item: WorkItem) -> str:
        """Run `item`'s handler, then complete it; a handler with a `completed(item)` method
        that answers True has completed the item in its own transaction (batch handlers).
        Returns the outcome, which `observe` is told with the time it took."""
        started = time.perf_counter()
        outcome = self._run(item)
        if self.observe is not None:
            try:
                self.observe(item.kind, outcome, time.perf_counter() - started)
            except Exception:  # a metric must never fail the work
                log.exception("observing work failed", extra={"kind": item.kind})
        return outcome

    def _run(self, item: WorkItem) -> str:
        handler = self.handlers[item.kind]
        context = {"work_item": item.id, "kind": item.kind, "attempt": item.attempts}
        try:
            handler(item)
        except RetryLater as exc:
            self.queue.postpone(item, self.name, exc.delay_seconds, str(exc))
            log.info("work postponed", extra={**context, "why": str(exc)})
            return "postponed"
        except InboundError as exc:
            outcome = self.queue.fail(item, self.name, f"bad input: {exc}", final=True)
            log.warning("work rejected", extra={**context, "error": str(exc)})
            return outcome
        except PeerError as exc:
            outcome = self.queue.fail(item, self.name, f"peer: {exc}", final=not exc.retryable)
            log.warning("work failed", extra={**context, "error": str(exc), "outcome": outcome})
            return outcome
        except DataError as exc:  # the input holds a value the database refuses: no retry helps
            why = refused(exc)
            outcome = self.queue.fail(item, self.name, f"bad input: {why}", final=True)
            log.warning("work rejected by the database", extra={**context, "error": why})
            return outcome
        except Exception as exc:  # a bug or an unexpected failure: retry, then quarantine
            outcome = self.queue.fail(item, self.name, f"{type(exc).__name__}: {exc}")
            log.exception("work crashed", extra={**context, "outcome": outcome})
            return outcome
        completed = getattr(handler, "completed", None)
        if completed is not None and completed(item):
            return "done"  # the handler completed it itself, with others, in one transaction
        self.queue.complete(item, self.name)
        return "done"

    def run(self, stop: threading.Event, idle_sleep: float = 0.2) -> None:
        """Process until `stop` is set; sleeps briefly when nothing is due."""
        log.info("worker started", extra={"worker": self.name, "kinds": sorted(self.handlers)})
        while not stop.is_set():
            try:
                busy = self.run_once()
            except Exception:
                log.exception("claiming work failed; retrying")
                busy = 0
            if not busy:
                stop.wait(idle_sleep)

    def drain(self, max_rounds: int = 10_000) -> int:
        """Run until nothing is due (tests, the demo); returns items processed."""
        total = 0
        for _ in range(max_rounds):
            done = self.run_once()
            if not done:
                break
            total += done
        return total
