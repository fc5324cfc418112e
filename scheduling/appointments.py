"""Appointments of referrals as we keep them (scheduling_appointments): one row per Appointment
on a calendar, whoever booked it, with what reminders and the no-show check need."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from referrals.store.database import Database
from scheduling.slots import parse_instant
from scheduling.tables import appointments

#: statuses of an appointment that is still to happen
ACTIVE = ("booked", "pending", "arrived", "checked-in")
ATTENDED = ("arrived", "checked-in", "fulfilled")


@dataclass(frozen=True)
class AppointmentRow:
    id: str
    referral_id: str
    server: str
    appointment_id: str
    destination: str
    status: str
    start: datetime
    end: datetime | None
    time_zone: str
    slots: list[str] = field(default_factory=list)
    location: str = ""
    clinician: str = ""
    booked_by: str = ""
    confirmed_at: datetime | None = None
    sequence: int = 0

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def reference(self) -> str:
        return f"Appointment/{self.appointment_id}"


def facts_of(appointment: dict[str, Any]) -> dict[str, Any]:
    """Start, end, slots, location and clinician of an Appointment resource."""
    location = clinician = ""
    for participant in appointment.get("participant") or []:
        actor = participant.get("actor") or {}
        reference, display = str(actor.get("reference") or ""), str(actor.get("display") or "")
        if reference.startswith(("Practitioner/", "PractitionerRole/")) and not clinician:
            clinician = display
        elif (reference.startswith(("Location/", "HealthcareService/")) or not reference) \
                and display and not location:
            location = display
    return {"start": parse_instant(appointment.get("start")),
            "end": parse_instant(appointment.get("end")),
            "slots": [str(s.get("reference")) for s in appointment.get("slot") or []
                      if s.get("reference")],
            "location": location, "clinician": clinician,
            "status": str(appointment.get("status") or "booked")}


class AppointmentBook:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, conn: Connection, referral_id: str, server: str,
               appointment: dict[str, Any], *, destination: str, time_zone: str,
               booked_by: str, now: datetime | None = None) -> AppointmentRow | None:
        """Insert or update the row of this Appointment; None when it has no start time."""
        facts = facts_of(appointment)
        if facts["start"] is None:
            return None
        at = now or datetime.now(UTC)
        current = conn.execute(sa.select(appointments).where(
            appointments.c.server == server,
            appointments.c.appointment_id == str(appointment["id"]))).mappings().first()
        values = {"status": facts["status"], "start": facts["start"], "end": facts["end"],
                  "slots": facts["slots"], "location": facts["location"][:256],
                  "clinician": facts["clinician"][:256], "updated_at": at}
        if current is None:
            row_id = uuid.uuid4().hex
            conn.execute(appointments.insert().values(
                id=row_id, referral_id=referral_id, server=server,
                appointment_id=str(appointment["id"]), destination=destination,
                time_zone=time_zone, booked_by=booked_by[:256], created_at=at, sequence=0,
                **values))
        else:
            row_id = current["id"]
            moved = _utc(current["start"]) != facts["start"]
            conn.execute(appointments.update().where(appointments.c.id == row_id).values(
                sequence=appointments.c.sequence + (1 if moved else 0), **values))
        return self.get(row_id, conn)

    def get(self, row_id: str, conn: Connection | None = None) -> AppointmentRow | None:
        query = sa.select(appointments).where(appointments.c.id == row_id)
        if conn is not None:
            row = conn.execute(query).mappings().first()
        else:
            with self.db.read() as c:
                row = c.execute(query).mappings().first()
        return _row(row) if row else None

    def find(self, server: str, appointment_id: str,
             conn: Connection) -> AppointmentRow | None:
        row = conn.execute(sa.select(appointments).where(
            appointments.c.server == server,
            appointments.c.appointment_id == appointment_id)).mappings().first()
        return _row(row) if row else None

    def find_any_server(self, appointment_id: str, conn: Connection) -> AppointmentRow | None:
        row = conn.execute(sa.select(appointments).where(
            appointments.c.appointment_id == appointment_id)
            .order_by(appointments.c.updated_at.desc())).mappings().first()
        return _row(row) if row else None

    def of_referral(self, referral_id: str, conn: Connection | None = None
                    ) -> list[AppointmentRow]:
        query = sa.select(appointments).where(appointments.c.referral_id == referral_id) \
            .order_by(appointments.c.created_at, appointments.c.id)
        if conn is not None:
            rows = conn.execute(query).mappings().all()
        else:
            with self.db.read() as c:
                rows = c.execute(query).mappings().all()
        return [_row(r) for r in rows]

    def current(self, referral_id: str, conn: Connection | None = None
                ) -> AppointmentRow | None:
        """The referral's appointment still to happen (the latest one), if any."""
        active = [a for a in self.of_referral(referral_id, conn) if a.active]
        return active[-1] if active else None

    def set_status(self, conn: Connection, row_id: str, status: str,
                   now: datetime | None = None) -> None:
        conn.execute(appointments.update().where(appointments.c.id == row_id).values(
            status=status, updated_at=now or datetime.now(UTC)))

    def confirm(self, conn: Connection, row_id: str, now: datetime | None = None) -> None:
        conn.execute(appointments.update().where(appointments.c.id == row_id).values(
            confirmed_at=now or datetime.now(UTC)))

    def due_for_check(self, now: datetime, grace: timedelta, every: timedelta,
                      limit: int = 200) -> list[AppointmentRow]:
        """Appointments whose start plus grace has passed without an outcome we know of, not
        checked on their calendar in the last `every`."""
        with self.db.read() as c:
            rows = c.execute(sa.select(appointments).where(
                appointments.c.status.in_(ACTIVE), appointments.c.start < now - grace,
                sa.or_(appointments.c.checked_at.is_(None),
                       appointments.c.checked_at < now - every))
                .order_by(appointments.c.start).limit(limit)).mappings().all()
        return [_row(r) for r in rows]

    def mark_checked(self, row_id: str, now: datetime | None = None) -> None:
        with self.db.write() as c:
            c.execute(appointments.update().where(appointments.c.id == row_id)
                      .values(checked_at=now or datetime.now(UTC)))


def _row(row: Any) -> AppointmentRow:
    return AppointmentRow(
        id=row["id"], referral_id=row["referral_id"], server=row["server"],
        appointment_id=row["appointment_id"], destination=row["destination"],
        status=row["status"], start=_utc(row["start"]),
        end=_utc(row["end"]) if row["end"] else None, time_zone=row["time_zone"],
        slots=list(row["slots"] or []), location=row["location"], clinician=row["clinician"],
        booked_by=row["booked_by"],
        confirmed_at=_utc(row["confirmed_at"]) if row["confirmed_at"] else None,
        sequence=int(row["sequence"]))


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
