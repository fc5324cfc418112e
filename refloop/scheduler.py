"""Periodic ticks (APScheduler in each process); the timers themselves are work items.

Every node ticks; the idempotency key `timer:<name>:<slot>` makes each period's work item unique
across nodes, so any number of processes share the timers through the database. A timer marked
`at_start` also gets one item per process start, keyed `timer:<name>:start:<random>`: a start-up
run must happen even when this period's item already ran before a restart.
"""

from __future__ import annotations

import logging
import time
import uuid

from apscheduler.schedulers.background import BackgroundScheduler

from referrals.store.work import WorkQueue
from refloop.wiring import Timer

log = logging.getLogger("refloop.scheduler")


def enqueue_due(queue: WorkQueue, timers: list[Timer], now: float | None = None) -> int:
    """Enqueue this period's item for every timer; returns how many were new."""
    moment = time.time() if now is None else now
    added = 0
    for timer in timers:
        slot = int(moment // timer.every_seconds)
        if queue.enqueue(timer.kind, {**timer.payload, "timer": timer.name, "slot": slot},
                         key=f"timer:{timer.name}:{slot}", max_attempts=3) is not None:
            added += 1
    return added


def enqueue_start(queue: WorkQueue, timers: list[Timer]) -> int:
    """One item for every `at_start` timer, never de-duplicated against the periodic ones."""
    added = 0
    for timer in timers:
        if timer.at_start and queue.enqueue(
                timer.kind, {**timer.payload, "timer": timer.name, "start": True},
                key=f"timer:{timer.name}:start:{uuid.uuid4().hex}", max_attempts=3) is not None:
            added += 1
    return added


def start_scheduler(queue: WorkQueue, timers: list[Timer], tick_seconds: float
                    ) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(daemon=True)

    def tick() -> None:
        try:
            enqueue_due(queue, timers)
        except Exception:
            log.exception("scheduler tick failed")

    scheduler.add_job(tick, "interval", seconds=tick_seconds, id="refloop-tick",
                      max_instances=1, coalesce=True)
    scheduler.start()
    enqueue_start(queue, timers)  # a worker that cannot record these must not start
    tick()
    return scheduler
