"""What the calendar says about an appointment after it was booked, and what that does to the
referral: `noshow` (a subscription notification or the poll) -> no-show; `cancelled` ->
back to scheduling; `fulfilled`, `arrived` and `checked-in` -> visit completed (the patient
came: the consult note is owed from then on). The poll also infers a no-show when the visit
time plus the grace period has passed and the calendar still says `booked` (no arrival, no
check-in). A cancellation of an appointment that is not ours frees its slots for the
waitlist."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from referrals.errors import IllegalTransition
from referrals.lifecycle import TABLE
from referrals.model import Actor, Command, Link, Reason
from scheduling.appointments import ATTENDED, AppointmentBook, AppointmentRow
from scheduling.context import Core

log = logging.getLogger("refloop.scheduling.watch")

CALENDAR = Actor("Device/refloop-scheduling", "Refloop scheduling", "system")
SOURCE = "scheduling:calendar"

#: appointment status on the calendar -> lifecycle action
ACTIONS = {"noshow": "no-show", "cancelled": "cancel-appointment",
           "entered-in-error": "cancel-appointment", "fulfilled": "complete-visit",
           "arrived": "complete-visit", "checked-in": "complete-visit"}

#: (server, freed Slot keys) -> offers made; wired to the waitlist
Freed = Callable[[str, list[str]], None]


class Watch:
    def __init__(self, core: Core, book: AppointmentBook, grace_minutes: float,
                 freed: Freed | None = None) -> None:
        self.core = core
        self.book = book
        self.grace_minutes = grace_minutes
        self.freed = freed

    def apply(self, server: str, appointment: dict[str, Any], *, polled: bool = False,
              now: datetime | None = None) -> str:
        """Bring the referral in line with the calendar's Appointment; what was done."""
        at = now or datetime.now(UTC)
        status = str(appointment.get("status") or "")
        with self.core.db.read() as conn:
            row = self.book.find(server, str(appointment.get("id")), conn)
        if row is None:
            if status == "cancelled" and self.freed is not None:
                self.freed(server, [str(s.get("reference")) for s in
                                    appointment.get("slot") or [] if s.get("reference")])
                return "freed"
            return "not ours"
        if not row.active:
            return "already " + row.status
        action = ACTIONS.get(status)
        reason = None
        if action is None and status in ATTENDED:
            with self.core.db.write() as conn:
                self.book.set_status(conn, row.id, status, at)
            return status
        if action is None and polled and status in ("booked", "pending") and \
                (at - row.start).total_seconds() > self.grace_minutes * 60:
            action = "no-show"
            reason = Reason("no-check-in", f"no arrival or check-in {self.grace_minutes:.0f} "
                            "minutes after the visit time")
        if action is None:
            return "unchanged"
        return self._act(server, appointment, row, action, reason, at)

    def _act(self, server: str, appointment: dict[str, Any], row: AppointmentRow,
             action: str, reason: Reason | None, at: datetime) -> str:
        referral = self.core.store.get(row.referral_id)
        if referral.stage not in TABLE[action].sources:
            return f"referral is {referral.stage.value}"
        link = Link("Appointment", row.reference, str(appointment.get("status") or action))
        try:
            with self.core.db.write() as conn:
                self.core.resources.put(appointment, server=server, conn=conn)
                self.core.referrals.act(referral.id, Command(
                    action, actor=CALENDAR, at=at, source=SOURCE, reason=reason,
                    changes={"add_outputs": [link]}), conn=conn)
        except IllegalTransition as exc:
            log.info("scheduling: referral not moved", extra={"referral_id": referral.id,
                                                              "why": str(exc)})
            return "refused"
        if action == "cancel-appointment" and self.freed is not None and row.slots:
            self.freed(server, row.slots)
        return action
