"""Operational figures for IT teams, read from the store at scrape time: what waits in the inbox
and the work queue, how late and how often work fails, what is in quarantine, and totals of what
was received. Every process computes the same figures from the shared database, so any node and
any web process answers alike.

Totals over append-only tables (the inbox, the adapters' decision logs) are counted once and
then only their newest rows each time (`TailCount`); rows younger than `SETTLE` are counted
again each time, so a row committed a moment late (PostgreSQL hands out ids before commit) is
never missed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from referrals.store.database import Database
from referrals.store.inbox import RECEIVED
from referrals.store.schema import inbox, quarantine, work_items
from referrals.store.work import PENDING, QUARANTINED

SETTLE = timedelta(minutes=5)
Labels = tuple[str, ...]


@dataclass(frozen=True)
class Figure:
    """One metric family: name (without the `refloop_` prefix), help text, type (gauge or
    counter), label names, and its samples (label values, value)."""

    name: str
    documentation: str
    kind: str
    labels: tuple[str, ...]
    samples: list[tuple[Labels, float]]


#: a figure an adapter contributes (wired in by refloop/wiring): reads its own tables
Source = Callable[[Connection, datetime], list[Figure]]


@dataclass
class TailCount:
    """Rows of an append-only table grouped by some columns, counted incrementally."""

    table: sa.Table
    id_column: str
    time_column: str
    group: tuple[str, ...]
    settled_id: int = 0
    settled: dict[Labels, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, c: Connection, now: datetime) -> dict[Labels, int]:
        with self.lock:
            ident = self.table.c[self.id_column]
            moment = self.table.c[self.time_column]
            newer = ident > self.settled_id
            # every row below the oldest young one is old: settle up to there
            young = c.execute(sa.select(sa.func.min(ident))
                              .where(newer, moment >= now - SETTLE)).scalar()
            upto = int(young) - 1 if young is not None else \
                c.execute(sa.select(sa.func.max(ident)).where(newer)).scalar()
            if upto is not None and upto > self.settled_id:
                for key, n in self._grouped(c, newer, ident <= upto).items():
                    self.settled[key] = self.settled.get(key, 0) + n
                self.settled_id = int(upto)
            totals = dict(self.settled)
            for key, n in self._grouped(c, ident > self.settled_id).items():
                totals[key] = totals.get(key, 0) + n
            return totals

    def _grouped(self, c: Connection, *where: sa.ColumnElement[bool]) -> dict[Labels, int]:
        columns = [self.table.c[name] for name in self.group]
        return {tuple(str(v) for v in row[:-1]): int(row[-1]) for row in c.execute(
            sa.select(*columns, sa.func.count()).where(*where).group_by(*columns))}


class Operations:
    """The figures, with the incremental totals this process keeps."""

    def __init__(self, db: Database, sources: Sequence[Source] = ()) -> None:
        self.db = db
        self.sources = list(sources)
        self.received = TailCount(inbox, "id", "received_at", ("channel",))

    def figures(self, now: datetime | None = None) -> list[Figure]:
        now = now or datetime.now(UTC)
        with self.db.read() as c:
            found = [*self._inbox(c, now), *self._work(c, now), self._quarantine(c)]
            for source in self.sources:
                found.extend(source(c, now))
        return found

    def _inbox(self, c: Connection, now: datetime) -> list[Figure]:
        rows = c.execute(sa.select(inbox.c.channel, sa.func.count(),
                                   sa.func.min(inbox.c.received_at))
                         .where(inbox.c.status == RECEIVED).group_by(inbox.c.channel)).all()
        received = self.received.count(c, now)
        channels = sorted({r.channel for r in rows} | {k[0] for k in received})
        waiting = {r.channel: (int(r[1]), _age(now, r[2])) for r in rows}
        return [
            Figure("inbox_depth", "Inbound messages stored and not yet processed", "gauge",
                   ("channel",), [((ch,), waiting.get(ch, (0, 0.0))[0]) for ch in channels]),
            Figure("inbox_oldest_age_seconds", "Age of the oldest unprocessed inbound message",
                   "gauge", ("channel",),
                   [((ch,), waiting.get(ch, (0, 0.0))[1]) for ch in channels]),
            Figure("inbox_received", "Inbound messages stored (notifications, HL7 v2 "
                   "messages...); rate() gives messages per second", "counter", ("channel",),
                   [((ch,), received.get((ch,), 0)) for ch in channels]),
        ]

    def _work(self, c: Connection, now: datetime) -> list[Figure]:
        w = work_items.c
        leased = sa.and_(w.lease_expires.is_not(None), w.lease_expires >= now)
        state = sa.case((leased, "leased"), (w.run_at <= now, "due"), else_="scheduled")
        rows = c.execute(sa.select(w.kind, state.label("state"), sa.func.count(),
                                   sa.func.min(w.run_at),
                                   sa.func.sum(sa.case((sa.and_(w.attempts > 0,
                                                                w.last_error.is_not(None)), 1),
                                                       else_=0)))
                         .where(w.status == PENDING).group_by(w.kind, state)).all()
        quarantined: dict[str, int] = {
            kind: int(n) for kind, n in c.execute(sa.select(w.kind, sa.func.count())
                                                  .where(w.status == QUARANTINED)
                                                  .group_by(w.kind))}
        kinds = sorted({r.kind for r in rows} | set(quarantined))
        depth = {(r.kind, r.state): int(r[2]) for r in rows}
        lag = {r.kind: _age(now, r[3]) for r in rows if r.state == "due"}
        retrying: dict[str, int] = {}
        for row in rows:
            retrying[row.kind] = retrying.get(row.kind, 0) + int(row[4] or 0)
        return [
            Figure("work_depth", "Work items waiting: due now, scheduled later, or leased to a "
                   "worker", "gauge", ("kind", "state"),
                   [((k, s), depth.get((k, s), 0)) for k in kinds
                    for s in ("due", "scheduled", "leased")]),
            Figure("work_lag_seconds", "How long the oldest due work item has waited", "gauge",
                   ("kind",), [((k,), lag.get(k, 0.0)) for k in kinds]),
            Figure("work_retrying", "Work items that failed and wait for another attempt",
                   "gauge", ("kind",), [((k,), retrying.get(k, 0)) for k in kinds]),
            Figure("work_quarantined", "Work items that failed for good (kept in quarantine)",
                   "gauge", ("kind",), [((k,), int(quarantined.get(k, 0))) for k in kinds]),
        ]

    def _quarantine(self, c: Connection) -> Figure:
        q = quarantine.c
        rows = c.execute(sa.select(q.origin, q.kind, sa.func.count())
                         .where(q.resolved_at.is_(None)).group_by(q.origin, q.kind)).all()
        return Figure("quarantine_open", "Input and work kept aside and not resolved", "gauge",
                      ("origin", "kind"), [((r.origin, r.kind), int(r[2])) for r in rows])


def _age(now: datetime, moment: Any) -> float:
    if moment is None:
        return 0.0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (now - moment).total_seconds())
