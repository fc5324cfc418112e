"""Finding and booking for one referral, from the patient's link or the coordinator's page.

A booking is decided by the calendar (the source's race handling); once it won, the Appointment
is stored and the referral moves to `scheduled` in one transaction, and the appointment it
replaces (a reschedule) is released by `scheduling.release` work enqueued in that same
transaction. Everything that follows a booking (the appointment row, reminders, the
confirmation with its .ics) is done by the referral listener (listener.py), whoever booked.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from referrals.errors import DomainError
from referrals.lifecycle import TABLE
from referrals.model import Actor, Command, Link, Referral
from scheduling.appointments import AppointmentBook, AppointmentRow
from scheduling.config import Destination, SchedulingConfig
from scheduling.context import Core
from scheduling.orphans import check_later
from scheduling.patient import PatientFacts, load_patient
from scheduling.slots import BookingRequest, Handoff, SlotOption, SlotTaken
from scheduling.sources import Sources
from scheduling.tables import requests

RELEASE_KIND = "scheduling.release"
SOURCE = "scheduling"


class CannotBook(DomainError):
    """Booking is not possible for this referral now; the message says why."""


@dataclass(frozen=True)
class SlotPage:
    destination: Destination
    options: list[SlotOption]
    #: where "later dates" continues from (the last start shown); None at the end
    after: datetime | None = None


@dataclass(frozen=True)
class Outcome:
    booked: AppointmentRow | None = None
    taken: bool = False
    handoff: str = ""
    next_page: SlotPage | None = None
    notes: list[str] = field(default_factory=list)


class Booker:
    def __init__(self, core: Core, config: SchedulingConfig, sources: Sources,
                 book: AppointmentBook) -> None:
        self.core = core
        self.config = config
        self.sources = sources
        self.book_rows = book

    def destination(self, referral: Referral) -> Destination | None:
        return self.config.destination_for(referral.specialty, referral.performer)

    def patient(self, referral: Referral) -> PatientFacts:
        with self.core.db.read() as conn:
            return load_patient(conn, referral)

    def find(self, referral_id: str, after: datetime | None = None,
             now: datetime | None = None) -> SlotPage:
        referral = self.core.store.get(referral_id)
        destination = self._destination(referral)
        source = self.sources.for_destination(destination)
        at = now or datetime.now(UTC)
        start = max(after or at, at)
        if source is None:
            return SlotPage(destination, [])
        limit = self.config.slots_per_page
        options = source.find(start, at + timedelta(days=self.config.search_days), limit + 1)
        shown = options[:limit]
        more = shown[-1].start if len(options) > limit and shown else None
        return SlotPage(destination, shown, more)

    def book(self, referral_id: str, key: str, actor: Actor, *,
             now: datetime | None = None) -> Outcome:
        """Book the slot `key` for the referral (a reschedule when it has an appointment)."""
        referral = self.core.store.get(referral_id)
        if referral.stage not in TABLE["schedule"].sources:
            raise CannotBook(f"the referral is {referral.stage.value}; it cannot be scheduled "
                             "now")
        destination = self._destination(referral)
        source = self.sources.for_destination(destination)
        if source is None:
            raise CannotBook(f"{destination.name} books through its own scheduling system; "
                             "send the patient's preferences instead")
        option = source.get(key)
        if option is None:
            return Outcome(taken=True, next_page=self.find(referral_id, now=now))
        patient = self.patient(referral)
        request = BookingRequest(referral.id, referral.patient, referral.service_request,
                                 patient.display)
        if hasattr(source, "ours"):  # a calendar we can ask for our booking (orphans.py)
            check_later(self, referral, destination, option.key)  # committed before the call
        try:
            result = source.book(option, request)
        except SlotTaken:
            return Outcome(taken=True, next_page=self.find(referral_id, now=now))
        if isinstance(result, Handoff):
            self._record_request(referral, destination, "deep-link",
                                 {"slot": option.key, "start": option.start.isoformat(),
                                  "url": result.url})
            return Outcome(handoff=result.url)
        row = self._commit(referral, destination, result.server, result.appointment, actor)
        return Outcome(booked=row)

    def adopt(self, referral: Referral, destination: Destination, server: str,
              appointment: dict[str, Any], actor: Actor) -> AppointmentRow | None:
        """Store an Appointment the calendar holds for the referral (see orphans.py)."""
        return self._commit(referral, destination, server, appointment, actor)

    def _commit(self, referral: Referral, destination: Destination, server: str,
                appointment: dict[str, Any], actor: Actor) -> AppointmentRow | None:
        link = Link("Appointment", f"Appointment/{appointment['id']}",
                    str(appointment.get("start", "")))
        with self.core.db.write() as conn:
            # Read what this booking replaces under the referral's lock: a concurrent booking
            # of the same referral (a double tap) commits first, and its Appointment is then
            # one of ours to release, not left booked on the calendar.
            self.core.store.get(referral.id, conn, lock=True)
            replaced = [a for a in self.book_rows.of_referral(referral.id, conn) if a.active
                        and (a.server, a.appointment_id) != (server, str(appointment["id"]))]
            self.core.resources.put(appointment, server=server, conn=conn)
            self.core.referrals.act(referral.id, Command(
                "schedule", actor=actor, at=datetime.now(UTC), source=SOURCE,
                changes={"add_outputs": [link]}), conn=conn)
            for previous in replaced:
                self.release(conn, previous, "rescheduled by the patient")
            if destination.subscribe and self.core.hooks is not None and \
                    destination.source in ("fhir", "ihe"):
                self.core.work.enqueue("scheduling.subscribe", {"server": server},
                                       key=f"scheduling.subscribe:{server}", conn=conn)
            return self.book_rows.find(server, str(appointment["id"]), conn)

    def cancel(self, referral_id: str, actor: Actor, reason: str) -> AppointmentRow | None:
        """Cancel the referral's current appointment: the referral goes back to scheduling and
        the calendar is told by `scheduling.release` work (same transaction)."""
        current = self.book_rows.current(referral_id)
        if current is None:
            return None
        with self.core.db.write() as conn:
            self.core.referrals.act(referral_id, Command(
                "cancel-appointment", actor=actor, at=datetime.now(UTC), source=SOURCE,
                changes={"add_outputs": [Link("Appointment", current.reference, "cancelled")]}),
                conn=conn)
            self.release(conn, current, reason)
        return current

    def release(self, conn: Any, row: AppointmentRow, reason: str) -> None:
        self.core.work.enqueue(RELEASE_KIND, {
            "referral_id": row.referral_id, "server": row.server,
            "appointment_id": row.appointment_id, "destination": row.destination,
            "reason": reason}, key=f"{RELEASE_KIND}:{row.server}:{row.appointment_id}",
            conn=conn)

    def request_by_preferences(self, referral_id: str, preferences: dict[str, Any],
                               actor: Actor) -> str:
        """A v2 scheduling system: ask for an appointment (SRM^S01) with the patient's
        preferred days and times; the SIU^S12 answer books it through the v2 bridge."""
        referral = self.core.store.get(referral_id)
        destination = self._destination(referral)
        if destination.source != "hl7v2":
            raise CannotBook(f"{destination.name} offers slots to choose from")
        with self.core.db.write() as conn:
            patient = load_patient(conn, referral)
            request_id = self._record_request(referral, destination, "srm", preferences, conn)
            self.core.work.enqueue("hl7.srm", {
                "referral_id": referral.id, "partner": destination.hl7_partner,
                "request_id": request_id, "patient": referral.patient,
                "patient_name": patient.display, "birth_date": patient.birth_date,
                "service_request": referral.service_request, "specialty": referral.specialty,
                "preferences": preferences, "time_zone": destination.time_zone,
                "requested_by": actor.reference}, key=f"hl7.srm:{request_id}", conn=conn)
        return request_id

    def _record_request(self, referral: Referral, destination: Destination, kind: str,
                        detail: dict[str, Any], conn: Any = None) -> str:
        request_id = uuid.uuid4().hex[:16]
        with self.core.db.using(conn) as c:
            c.execute(requests.insert().values(
                id=request_id, referral_id=referral.id, destination=destination.name,
                kind=kind, detail=detail, created_at=datetime.now(UTC)))
        return request_id

    def _destination(self, referral: Referral) -> Destination:
        destination = self.destination(referral)
        if destination is None:
            raise CannotBook(f"no [[scheduling.destinations]] entry matches specialty "
                             f"{referral.specialty!r} or performer {referral.performer!r}")
        return destination
