"""`replan` (the batched re-planning of every coming appointment's reminders) against the plain
way of doing it, over varied data, on SQLite and PostgreSQL: zones with and without daylight
saving (and half-hour offsets), visits on the days clocks change, ladders per specialty (any
case), preparation ladders, steps already sent or cancelled, planned steps whose time moved or
whose day left the ladder, appointments past, cancelled or replaced, referrals of several
appointments, and batches far smaller than the data.

`plain_replan` below is the straightforward version replan was before it was tuned (each
batch drops every planned step and inserts the new plan), kept here as the reference: the
reminders left behind must be the same row for row, and so must the counts."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from referrals.store import connect
from referrals.store.database import Database
from referrals.store.schema import referrals
from scheduling.appointments import ACTIVE
from scheduling.config import SchedulingConfig, from_section
from scheduling.reminders import PLANNED, PREPARATION, REMINDER, plan
from scheduling.replan import Replanned, replan
from scheduling.tables import appointments, reminders

pytestmark = pytest.mark.integration

NOW = datetime(2027, 2, 20, 17, 23, tzinfo=UTC)
ZONES = ("America/Chicago", "America/New_York", "America/Phoenix", "Europe/London",
         "Asia/Kolkata", "Pacific/Auckland", "UTC")
#: local days on which clocks change in some of those zones (2027)
CHANGES = (datetime(2027, 3, 14), datetime(2027, 3, 28), datetime(2027, 4, 4),
           datetime(2027, 9, 26), datetime(2027, 10, 31), datetime(2027, 11, 7))
SPECIALTIES = ("cardiology", "Gastroenterology", "DERMATOLOGY", "neurology", "oncology")
STATUSES = (*ACTIVE, "booked", "booked", "cancelled", "noshow", "fulfilled", "replaced")
DESTINATIONS = ("clinic", "endoscopy", "retired")


def config() -> SchedulingConfig:
    return from_section({
        "reminder_days": [7, 2, 1], "reminder_hour": 9,
        "reminders_by_specialty": {"gastroenterology": [10, 3, 1], "dermatology": [5],
                                   "neurology": [0, 1, 30]},
        "preparation": {"prep": {"reminder_days": [4, 1]}},
        "destinations": [
            {"name": "clinic", "specialties": ["cardiology"], "fhir_base": "http://e.invalid"},
            {"name": "endoscopy", "specialties": ["gastroenterology"], "preparation": "prep",
             "fhir_base": "http://e.invalid"}]})


def load(db: Database, count: int, seed: int) -> None:
    """Referrals, appointments and the steps an older ladder left behind."""
    rng = random.Random(seed)
    refs, rows, steps = [], [], []
    for n in range(count):
        rid = f"ref-{n // 2}"  # two appointments per referral (one usually replaced)
        if n % 2 == 0:
            refs.append({"id": rid, "source_key": f"test|{rid}", "stage": "scheduled",
                         "task_status": "in-progress", "business_status": "5.1.1",
                         "priority": "routine", "patient": f"Patient/{n}", "owner": "",
                         "service_request": f"ServiceRequest/{n}",
                         "specialty": rng.choice(SPECIALTIES), "payer": "", "auth_state": "",
                         "created_at": NOW, "updated_at": NOW, "version": 1, "state": {},
                         "task": {}})
        zone = rng.choice(ZONES)
        if rng.random() < 0.3:  # a visit on (or right after) a day the clocks change
            day = rng.choice(CHANGES) + timedelta(days=rng.choice((0, 1, 2, 7, 10)))
            start = day.replace(hour=rng.randrange(0, 24), minute=rng.choice((0, 30, 45)),
                                tzinfo=ZoneInfo(zone)).astimezone(UTC)
        else:
            start = NOW + timedelta(minutes=rng.randrange(-3 * 24 * 60, 320 * 24 * 60))
        aid = f"{rng.getrandbits(64):016x}{n:06d}"
        rows.append({"id": aid, "referral_id": rid, "server": "s", "appointment_id": f"a{n}",
                     "destination": rng.choice(DESTINATIONS), "status": rng.choice(STATUSES),
                     "start": start, "time_zone": zone, "slots": [], "created_at": NOW,
                     "updated_at": NOW, "sequence": 0})
        for kind in (REMINDER, PREPARATION):
            for days in rng.sample((30, 10, 7, 5, 4, 3, 2, 1), rng.randrange(0, 4)):
                status = rng.choice((PLANNED, PLANNED, PLANNED, "sent", "cancelled"))
                due = plan(start, ZoneInfo(zone), [days], hour=9 if rng.random() < 0.5 else 8,
                           now=start - timedelta(days=400), kind=kind)
                steps.append({"appointment": aid, "referral_id": rid, "kind": kind,
                              "days_before": days, "status": status,
                              "due_at": due[0].due_at if due else start,
                              "sent_at": NOW - timedelta(days=1) if status == "sent" else None})
    with db.write() as conn:
        conn.execute(referrals.insert(), refs)
        conn.execute(appointments.insert(), rows)
        conn.execute(reminders.insert(), steps)


def snapshot(db: Database) -> list[dict[str, Any]]:
    with db.read() as conn:
        return [dict(r) for r in conn.execute(sa.select(reminders)).mappings()]


def restore(db: Database, rows: list[dict[str, Any]]) -> None:
    with db.write() as conn:
        conn.execute(reminders.delete())
        conn.execute(reminders.insert(), rows)


def content(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The reminders without their ids (the reference re-inserts every planned step)."""
    return sorted((r["appointment"], r["referral_id"], r["kind"], r["days_before"],
                   _utc(r["due_at"]), r["status"], r["sent_at"] and _utc(r["sent_at"]))
                  for r in rows)


def test_replan_leaves_the_same_reminders_as_the_plain_way(database_url: str) -> None:
    count, batch = 300, 5
    db = connect(database_url)
    try:
        load(db, count, seed=count)
        before = snapshot(db)
        expected = plain_replan(db, config(), now=NOW, batch=batch)
        reference = snapshot(db)
        restore(db, before)

        assert replan(db, config(), now=NOW, batch=batch) == expected
        assert content(snapshot(db)) == content(reference)
        assert expected.appointments > count // 3 and expected.steps > count // 2

        # planned steps that did not change keep their rows: a second run rewrites nothing
        settled = {r["id"]: r for r in snapshot(db)}
        assert replan(db, config(), now=NOW, batch=batch) == expected
        assert {r["id"]: r for r in snapshot(db)} == settled

        # a later `now` drops the steps that are past by then, as the plain way does
        later = NOW + timedelta(days=20)
        restore(db, list(settled.values()))
        expected = plain_replan(db, config(), now=later, batch=batch)
        reference = snapshot(db)
        restore(db, list(settled.values()))
        assert replan(db, config(), now=later, batch=batch) == expected
        assert content(snapshot(db)) == content(reference)
    finally:
        db.dispose()


def plain_replan(db: Database, config: SchedulingConfig, *, now: datetime,
                 batch: int) -> Replanned:
    """The reference: page through the coming appointments by id; in each page's transaction
    drop their planned steps, then insert each new plan's steps that were not sent or
    cancelled already."""
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
                .where(appointments.c.status.in_(ACTIVE), appointments.c.start > now,
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
                zone = zones.setdefault(row.time_zone, ZoneInfo(row.time_zone))
                start = _utc(row.start)
                steps = plan(start, zone, config.ladder_for(row.specialty),
                             hour=config.reminder_hour, now=now, kind=REMINDER)
                if row.destination in prep_days:
                    steps += plan(start, zone, prep_days[row.destination],
                                  hour=config.reminder_hour, now=now, kind=PREPARATION)
                new += [{"appointment": row.id, "referral_id": row.referral_id,
                         "kind": s.kind, "days_before": s.days_before, "due_at": s.due_at,
                         "status": PLANNED}
                        for s in steps if (row.id, s.kind, s.days_before) not in kept]
            if new:
                conn.execute(reminders.insert(), new)
        after = rows[-1].id
        seen += len(rows)
        planned += len(new)
    return Replanned(seen, planned)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
