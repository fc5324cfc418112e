"""Re-planning the reminders of every appointment still to come, after the ladder changed in
configuration (`refloop scheduling replan`): in batches, each batch one transaction that drops
the steps not yet sent and inserts the new ones (a step already sent is never sent again)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from referrals.store.database import Database
from referrals.store.schema import referrals
from scheduling.appointments import ACTIVE
from scheduling.config import SchedulingConfig
from scheduling.reminders import PLANNED, PREPARATION, REMINDER, plan
from scheduling.tables import appointments, reminders

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Replanned:
    appointments: int
    steps: int


def replan(db: Database, config: SchedulingConfig, *, now: datetime | None = None,
           batch: int = 2000, progress: Progress | None = None) -> Replanned:
    at = now or datetime.now(UTC)
    zones: dict[str, ZoneInfo] = {}
    prep_days = {d.name: config.preparations[d.preparation].reminder_days
                 for d in config.destinations if d.preparation in config.preparations}
    after, seen, planned = "", 0, 0
    while True:
        with db.write() as conn:
            rows = conn.execute(
                sa.select(appointments.c.id, appointments.c.referral_id, appointments.c.start,
                          appointments.c.time_zone, appointments.c.destination,
                          referrals.c.specialty)
                .join(referrals, referrals.c.id == appointments.c.referral_id)
                .where(appointments.c.status.in_(ACTIVE), appointments.c.start > at,
                       appointments.c.id > after)
                .order_by(appointments.c.id).limit(batch)).all()
            if not rows:
                break
            ids = [r.id for r in rows]
            conn.execute(reminders.delete().where(reminders.c.appointment.in_(ids),
                                                  reminders.c.status == PLANNED))
            kept = {(r.appointment, r.kind, r.days_before) for r in conn.execute(
                sa.select(reminders.c.appointment, reminders.c.kind, reminders.c.days_before)
                .where(reminders.c.appointment.in_(ids)))}
            new = []
            for row in rows:
                zone = zones.get(row.time_zone) or zones.setdefault(row.time_zone,
                                                                    ZoneInfo(row.time_zone))
                start = row.start if row.start.tzinfo else row.start.replace(tzinfo=UTC)
                steps = plan(start, zone, config.ladder_for(row.specialty),
                             hour=config.reminder_hour, now=at, kind=REMINDER)
                if row.destination in prep_days:
                    steps += plan(start, zone, prep_days[row.destination],
                                  hour=config.reminder_hour, now=at, kind=PREPARATION)
                new += [{"appointment": row.id, "referral_id": row.referral_id,
                         "kind": s.kind, "days_before": s.days_before, "due_at": s.due_at,
                         "status": PLANNED}
                        for s in steps if (row.id, s.kind, s.days_before) not in kept]
            if new:
                conn.execute(reminders.insert(), new)
        after = rows[-1].id
        seen += len(rows)
        planned += len(new)
        if progress is not None:
            progress(len(rows))
    return Replanned(seen, planned)
