"""Re-planning the reminders of every appointment still to come, after the ladder changed in
configuration (`refloop scheduling replan`).

The appointments to re-plan are listed once (their ids, from the status and start index), then
handled in batches, each batch one transaction: the batch's appointments are read by primary key
with their referral's specialty, their steps by appointment, and only the difference is
written: planned steps whose time moved are updated, steps no longer in the ladder deleted, new
ones inserted; a step already sent (or cancelled) is never planned again. The result is the
same as dropping every planned step and inserting the new plan (what booking does for one
appointment), without rewriting what did not change. (Paging with `id > last ... ORDER BY id`
made SQLite sort every coming appointment for each batch, and deleting by appointment and
status used the status index: both grew with the table.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from referrals.store.database import Database
from referrals.store.schema import referrals
from scheduling.appointments import ACTIVE
from scheduling.config import SchedulingConfig
from scheduling.reminders import PLANNED, PREPARATION, REMINDER, Step, plan
from scheduling.tables import appointments, reminders

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Replanned:
    appointments: int
    steps: int


class Ladders:
    """What each appointment's plan needs from configuration, looked up once."""

    def __init__(self, config: SchedulingConfig, now: datetime) -> None:
        self.config = config
        self.now = now
        self.zones: dict[str, ZoneInfo] = {}
        self.prep_days = {d.name: config.preparations[d.preparation].reminder_days
                          for d in config.destinations if d.preparation in config.preparations}

    def steps(self, start: datetime, time_zone: str, specialty: str,
              destination: str) -> list[Step]:
        zone = self.zones.get(time_zone) or self.zones.setdefault(time_zone,
                                                                  ZoneInfo(time_zone))
        hour = self.config.reminder_hour
        found = plan(start, zone, self.config.ladder_for(specialty), hour=hour, now=self.now,
                     kind=REMINDER)
        if destination in self.prep_days:
            found += plan(start, zone, self.prep_days[destination], hour=hour, now=self.now,
                          kind=PREPARATION)
        return found


def replan(db: Database, config: SchedulingConfig, *, now: datetime | None = None,
           batch: int = 2000, progress: Progress | None = None) -> Replanned:
    at = now or datetime.now(UTC)
    ladders = Ladders(config, at)
    seen = planned = 0
    for chunk in _batches(_coming(db, at), batch):
        with db.write() as conn:
            done, steps = _replan_batch(conn, chunk, ladders)
        seen += done
        planned += steps
        if progress is not None:
            progress(len(chunk))
    return Replanned(seen, planned)


def _coming(db: Database, at: datetime) -> list[str]:
    """Ids of the appointments still to come (an index scan; ids only, sorted)."""
    with db.read() as conn:
        return sorted(conn.execute(sa.select(appointments.c.id).where(
            appointments.c.status.in_(ACTIVE), appointments.c.start > at)).scalars())


def _batches(ids: Sequence[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(ids), size):
        yield list(ids[i:i + size])


def _replan_batch(conn: Connection, ids: list[str], ladders: Ladders) -> tuple[int, int]:
    """(appointments re-planned, steps in their new plans) for one batch, in its transaction."""
    # by primary key only: with the status and start conditions in SQL, SQLite's planner
    # prefers their index for a long id list and scans every coming appointment
    query = (sa.select(appointments.c.id, appointments.c.referral_id, appointments.c.start,
                       appointments.c.status, appointments.c.time_zone,
                       appointments.c.destination, referrals.c.specialty)
             .join(referrals, referrals.c.id == appointments.c.referral_id)
             .where(appointments.c.id.in_(ids)))
    if conn.dialect.name == "postgresql":  # a booking moving one of them waits for us
        query = query.with_for_update(of=appointments)
    rows = [r for r in conn.execute(query)
            if r.status in ACTIVE and _utc(r.start) > ladders.now]
    held: dict[tuple[str, str, int], Any] = {
        (r.appointment, r.kind, int(r.days_before)): r for r in conn.execute(
            sa.select(reminders.c.id, reminders.c.appointment, reminders.c.kind,
                      reminders.c.days_before, reminders.c.due_at, reminders.c.status)
            .where(reminders.c.appointment.in_(ids)))}
    fresh: list[dict[str, Any]] = []
    moved: list[dict[str, Any]] = []
    wanted: set[int] = set()
    steps = 0
    for row in rows:
        for step in ladders.steps(_utc(row.start), row.time_zone, row.specialty, row.destination):
            old = held.get((row.id, step.kind, step.days_before))
            if old is None:
                fresh.append({"appointment": row.id, "referral_id": row.referral_id,
                              "kind": step.kind, "days_before": step.days_before,
                              "due_at": step.due_at, "status": PLANNED})
            elif old.status != PLANNED:
                continue  # sent (or cancelled) already: never again
            else:
                wanted.add(int(old.id))
                if _utc(old.due_at) != step.due_at:
                    moved.append({"step_id": old.id, "new_due_at": step.due_at})
            steps += 1
    listed = {r.id for r in rows}
    dropped = [int(r.id) for r in held.values()
               if r.status == PLANNED and r.appointment in listed and int(r.id) not in wanted]
    if dropped:
        conn.execute(reminders.delete().where(reminders.c.id.in_(dropped)))
    if moved:
        conn.execute(reminders.update().where(reminders.c.id == sa.bindparam("step_id"))
                     .values(due_at=sa.bindparam("new_due_at")), moved)
    if fresh:
        conn.execute(reminders.insert(), fresh)
    return len(rows), steps


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
