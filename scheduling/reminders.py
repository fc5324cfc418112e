"""The reminder ladder: planned when an appointment is booked (days before the visit, per
specialty; preparation reminders per service), sent by the periodic tick as `outreach.message`
work, cancelled when the appointment is cancelled, moved or missed.

`plan()` is pure: each step is due at `hour` o'clock local time, that many days before the
visit's local date; steps already past (a visit booked for tomorrow) are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from referrals.store.database import Database
from scheduling.tables import reminders

PLANNED, SENT, CANCELLED = "planned", "sent", "cancelled"
REMINDER, PREPARATION = "reminder", "preparation"


@dataclass(frozen=True)
class Step:
    kind: str
    days_before: int
    due_at: datetime


def plan(start: datetime, zone: ZoneInfo, days: Sequence[int], *, hour: int, now: datetime,
         kind: str = REMINDER) -> list[Step]:
    local_day: date = start.astimezone(zone).date()
    return [step for step in _ladder(local_day, zone, tuple(days), hour, kind)
            if now < step.due_at < start]


@lru_cache(maxsize=4096)
def _ladder(local_day: date, zone: ZoneInfo, days: tuple[int, ...], hour: int,
            kind: str) -> tuple[Step, ...]:
    """The steps of a ladder for a visit on `local_day`, earliest first, before filtering:
    shared by every visit of that day and zone (re-planning many appointments computes each
    day's ladder once)."""
    return tuple(
        Step(kind, before,
             datetime.combine(local_day - timedelta(days=before), time(hour), zone)
             .astimezone(UTC))
        for before in sorted(set(days), reverse=True) if before > 0)


@dataclass(frozen=True)
class DueReminder:
    id: int
    appointment: str
    referral_id: str
    kind: str
    days_before: int


class ReminderBook:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, conn: Connection, appointment: str, referral_id: str,
            steps: Iterable[Step]) -> int:
        rows = [{"appointment": appointment, "referral_id": referral_id, "kind": s.kind,
                 "days_before": s.days_before, "due_at": s.due_at, "status": PLANNED}
                for s in steps]
        if rows:
            conn.execute(reminders.insert(), rows)
        return len(rows)

    def cancel(self, conn: Connection, appointment: str) -> int:
        return int(conn.execute(reminders.update().where(
            reminders.c.appointment == appointment, reminders.c.status == PLANNED)
            .values(status=CANCELLED)).rowcount)

    def claim_due(self, conn: Connection, now: datetime, limit: int = 200
                  ) -> list[DueReminder]:
        """Due planned reminders, locked for this transaction (others skip them), then marked
        sent in the same transaction as their messages are enqueued."""
        query = (sa.select(reminders.c.id, reminders.c.appointment, reminders.c.referral_id,
                           reminders.c.kind, reminders.c.days_before)
                 .where(reminders.c.status == PLANNED, reminders.c.due_at <= now)
                 .order_by(reminders.c.due_at).limit(limit))
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = conn.execute(query).all()
        return [DueReminder(int(r.id), r.appointment, r.referral_id, r.kind,
                            int(r.days_before)) for r in rows]

    def mark(self, conn: Connection, reminder_id: int, status: str, now: datetime) -> None:
        conn.execute(reminders.update().where(reminders.c.id == reminder_id)
                     .values(status=status, sent_at=now if status == SENT else None))

    def of_appointment(self, appointment: str) -> list[dict[str, Any]]:
        with self.db.read() as c:
            rows = c.execute(sa.select(reminders).where(reminders.c.appointment == appointment)
                             .order_by(reminders.c.due_at)).mappings().all()
        return [dict(r) for r in rows]
