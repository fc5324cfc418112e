"""What follows a referral's appointment changes, whoever made them (our booking, an SIU^S12
through the v2 bridge, the coordinator, an EHR notification): a referral listener, run inside
the transaction that saved the change, so every consequence is decided at commit.

- schedule: keep the appointment row, plan reminders (and preparation reminders), send the
  booking (or reschedule) confirmation with its .ics, retire the appointment it replaced;
- no-show: the recovery ladder with new booking links, a coordinator task after the second;
- cancel-appointment: the cancel confirmation, then back to scheduling by the same ladder;
- complete-visit and the end of the referral: reminders stop, links are revoked.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from referrals.lifecycle import Transition
from referrals.model import Event, Referral
from referrals.store.schema import resources
from scheduling.appointments import AppointmentBook, AppointmentRow
from scheduling.config import SchedulingConfig
from scheduling.context import Core
from scheduling.i18n import format_when
from scheduling.ics import CONTENT_TYPE, build_ics
from scheduling.links import LinkStore
from scheduling.messages import Attachment, enqueue_message, expire_messages
from scheduling.patient import load_patient
from scheduling.reminders import PREPARATION, REMINDER, ReminderBook, plan
from scheduling.tables import reminders, waitlist

log = logging.getLogger("refloop.scheduling")

RECOVERY_KIND = "scheduling.recovery"
TASK_KIND = "scheduling.noshow-task"
APPOINTMENT_TYPES = ("Appointment", "appointment")


class Follower:
    def __init__(self, core: Core, config: SchedulingConfig, book: AppointmentBook,
                 reminder_book: ReminderBook, links: LinkStore) -> None:
        self.core = core
        self.config = config
        self.book = book
        self.reminders = reminder_book
        self.links = links

    def link_url(self, token: str) -> str:
        return f"{self.core.base_url.rstrip('/')}/p/{token}"

    def on_transition(self, conn: Connection, change: Transition) -> None:
        referral, event = change.referral, change.event
        if self.config.destination_for(referral.specialty, referral.performer) is None:
            return  # not a referral this server schedules (no destination matches it)
        action = event.action
        if action == "schedule":
            self._scheduled(conn, referral, event)
        elif action == "no-show":
            self._missed(conn, referral, event)
        elif action == "cancel-appointment":
            self._cancelled(conn, referral, event)
        elif action == "complete-visit":
            self._ended(conn, referral, "fulfilled")
        elif referral.terminal and event.from_stage != event.to_stage:
            self._ended(conn, referral, "")
            self.links.revoke_all(referral.id, conn)

    # -- booked ------------------------------------------------------------------------------

    def _scheduled(self, conn: Connection, referral: Referral, event: Event) -> None:
        found = _appointment_of(conn, event)
        if found is None:
            return
        server, body = found
        destination = self.config.destination_for(referral.specialty, referral.performer)
        assert destination is not None
        zone = destination.time_zone
        before = {a.id: a for a in self.book.of_referral(referral.id, conn) if a.active}
        row = self.book.record(conn, referral.id, server, body,
                               destination=destination.name, time_zone=zone,
                               booked_by=event.actor.reference)
        if row is None or not row.active:
            return
        replaced = [a for a in before.values() if a.id != row.id]
        for old in replaced:
            self.book.set_status(conn, old.id, "replaced")
            self.reminders.cancel(conn, old.id)
            expire_messages(conn, referral.id, _context(old), datetime.now(UTC))
        moved = row.id in before and before[row.id].start != row.start
        if row.id in before and not moved:
            return  # the same appointment seen again
        if moved:
            expire_messages(conn, referral.id, _context(row), datetime.now(UTC))
        self._plan(conn, referral, row)
        purpose = "reschedule-confirmation" if replaced or moved else "booking-confirmation"
        self._confirm(conn, referral, row, purpose)
        conn.execute(waitlist.update().where(waitlist.c.referral_id == referral.id,
                                             waitlist.c.status == "waiting")
                     .values(appointment=row.id, current_start=row.start))

    def _plan(self, conn: Connection, referral: Referral, row: AppointmentRow) -> None:
        from zoneinfo import ZoneInfo

        now = datetime.now(UTC)
        zone = ZoneInfo(row.time_zone)
        steps = plan(row.start, zone, self.config.ladder_for(referral.specialty),
                     hour=self.config.reminder_hour, now=now)
        destination = self.config.destination(row.destination)
        prep = self.config.preparations.get(destination.preparation) if destination else None
        if prep is not None:
            steps += plan(row.start, zone, prep.reminder_days, hour=self.config.reminder_hour,
                          now=now, kind=PREPARATION)
        conn.execute(reminders.delete().where(reminders.c.appointment == row.id,
                                              reminders.c.status == "planned"))
        kept = {(r.kind, r.days_before) for r in conn.execute(
            sa.select(reminders.c.kind, reminders.c.days_before)
            .where(reminders.c.appointment == row.id))}
        self.reminders.add(conn, row.id, referral.id,
                           [s for s in steps if (s.kind, s.days_before) not in kept])

    def _confirm(self, conn: Connection, referral: Referral, row: AppointmentRow,
                 purpose: str) -> None:
        patient = load_patient(conn, referral)
        token = self.links.issue(referral.id, "manage", conn=conn)
        ics = self.ics(row, referral)
        enqueue_message(self.core.work, conn, referral.id, purpose, {
            "when": format_when(row.start, row.time_zone, patient.language),
            "when_iso": row.start.isoformat(), "location": row.location,
            "clinician": row.clinician, "link": self.link_url(token)},
            n=f"{row.id}:{row.sequence}",
            attachments=[Attachment("appointment.ics", CONTENT_TYPE, ics)],
            reply_context=_context(row))

    def ics(self, row: AppointmentRow, referral: Referral, *, cancelled: bool = False) -> bytes:
        what = referral.specialty or "Specialist"
        return build_ics(uid=f"appt-{row.appointment_id}@refloop", start=row.start,
                         end=row.end, zone=row.time_zone, summary=f"{what} appointment",
                         location=row.location,
                         description=f"With {row.clinician}" if row.clinician else "",
                         organizer=self.core.organizer,
                         sequence=row.sequence + (1 if cancelled else 0), cancelled=cancelled)

    # -- missed, cancelled, over --------------------------------------------------------------

    def _missed(self, conn: Connection, referral: Referral, event: Event) -> None:
        row = self._target(conn, referral, event)
        if row is not None:
            self.book.set_status(conn, row.id, "noshow")
            self.reminders.cancel(conn, row.id)
        misses = sum(1 for a in self.book.of_referral(referral.id, conn)
                     if a.status == "noshow")
        self._leave_waitlist(conn, referral.id)
        self._ladder(conn, referral, "no-show-recovery", max(1, misses),
                     self.config.recovery_days)
        if misses >= 2:
            self.core.work.enqueue(TASK_KIND, {"referral_id": referral.id, "misses": misses},
                                   key=f"{TASK_KIND}:{referral.id}:{misses}", conn=conn)

    def _cancelled(self, conn: Connection, referral: Referral, event: Event) -> None:
        row = self._target(conn, referral, event)
        if row is None:
            return
        self.book.set_status(conn, row.id, "cancelled")
        self.reminders.cancel(conn, row.id)
        expire_messages(conn, referral.id, _context(row), datetime.now(UTC))
        self._leave_waitlist(conn, referral.id)
        patient = load_patient(conn, referral)
        token = self.links.issue(referral.id, "rebook", conn=conn)
        enqueue_message(self.core.work, conn, referral.id, "cancel-confirmation", {
            "when": format_when(row.start, row.time_zone, patient.language),
            "location": row.location, "link": self.link_url(token)}, n=row.id,
            attachments=[Attachment("appointment.ics", CONTENT_TYPE.replace(
                "PUBLISH", "CANCEL"), self.ics(row, referral, cancelled=True))])
        cancels = sum(1 for a in self.book.of_referral(referral.id, conn)
                      if a.status == "cancelled")
        self._ladder(conn, referral, "booking-link", cancels,
                     tuple(d for d in self.config.recovery_days if d > 0))

    def _ended(self, conn: Connection, referral: Referral, status: str) -> None:
        for row in self.book.of_referral(referral.id, conn):
            if row.active:
                if status:
                    self.book.set_status(conn, row.id, status)
                self.reminders.cancel(conn, row.id)
        self._leave_waitlist(conn, referral.id)

    def _ladder(self, conn: Connection, referral: Referral, purpose: str, round_: int,
                days: tuple[int, ...]) -> None:
        now = datetime.now(UTC)
        for step, day in enumerate(sorted(days)):
            self.core.work.enqueue(RECOVERY_KIND, {
                "referral_id": referral.id, "purpose": purpose, "round": round_,
                "step": step}, key=f"{RECOVERY_KIND}:{referral.id}:{purpose}:{round_}:{step}",
                run_at=now + timedelta(days=day), conn=conn)

    def _target(self, conn: Connection, referral: Referral, event: Event
                ) -> AppointmentRow | None:
        """The appointment the event names, else the referral's current one."""
        for link in reversed(event.data.get("add_outputs") or []):
            if isinstance(link, dict) and link.get("type") in APPOINTMENT_TYPES:
                rid = str(link.get("reference", "")).rsplit("/", 1)[-1]
                found = self.book.find_any_server(rid, conn)
                if found is not None and found.referral_id == referral.id:
                    return found
        return self.book.current(referral.id, conn)

    def _leave_waitlist(self, conn: Connection, referral_id: str) -> None:
        conn.execute(waitlist.update().where(waitlist.c.referral_id == referral_id,
                                             waitlist.c.status == "waiting")
                     .values(status="left"))


def _context(row: AppointmentRow) -> str:
    """The reply context of the messages about one appointment (confirmations, reminders)."""
    return f"scheduling:appointment:{row.id}"


def _appointment_of(conn: Connection, event: Event) -> tuple[str, dict[str, Any]] | None:
    """(server, body) of the Appointment a schedule event linked, from the resources we hold."""
    for link in reversed(event.data.get("add_outputs") or []):
        if not isinstance(link, dict) or link.get("type") not in APPOINTMENT_TYPES:
            continue
        rid = str(link.get("reference", "")).rsplit("/", 1)[-1]
        row = conn.execute(sa.select(resources.c.server, resources.c.body).where(
            resources.c.resource_type == "Appointment", resources.c.resource_id == rid,
            resources.c.deleted.is_(False)).order_by(resources.c.updated_at.desc())).first()
        if row is not None and isinstance(row.body, dict):
            return str(row.server), row.body
    return None


__all__ = ["REMINDER", "Follower"]
