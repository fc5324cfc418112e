"""Bookings the calendar holds but the store never saw.

Booking is two commits in two systems: the calendar's (Slot busy, Appointment booked) and then
ours (the Appointment stored, the referral scheduled). A process that stops between the two
leaves an Appointment on the calendar that nothing here knows: the patient's page offers slots
again, and a second booking would leave the patient holding two. So before every booking a
check is queued (`scheduling.check-booking`), due once any booking still in flight is over. It
asks the calendar for the Appointment by the identifier we gave it and, when we never stored
it, adopts it (the referral has no appointment: it is scheduled with this one, and the patient
gets the confirmation) or releases it (the patient booked another meanwhile, or the referral
moved on). A booking that was stored costs no call to the calendar.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from referrals.lifecycle import TABLE
from referrals.model import Actor, Referral
from referrals.store.work import WorkItem
from scheduling.appointments import AppointmentBook, AppointmentRow
from scheduling.config import Destination, SchedulingConfig
from scheduling.context import Core
from scheduling.slots import Booked, BookingRequest
from scheduling.sources import Sources

CHECK_KIND = "scheduling.check-booking"
#: the least wait before the check; longer when the calendar's timeout allows slower bookings
CHECK_AFTER = timedelta(minutes=5)
ADOPTED_BY = Actor("Device/refloop-scheduling", "Refloop (booking found on the calendar)",
                   "device")

log = logging.getLogger(__name__)


class Booker(Protocol):
    """What the check needs of booking.Booker (which imports this module)."""

    core: Core
    config: SchedulingConfig
    sources: Sources
    book_rows: AppointmentBook

    def adopt(self, referral: Referral, destination: Destination, server: str,
              appointment: dict[str, Any], actor: Actor) -> AppointmentRow | None: ...


def check_later(booker: Booker, referral: Referral, destination: Destination,
                key: str) -> None:
    """Queue the check of the booking of slot `key` about to be sent to the calendar."""
    wait = max(CHECK_AFTER, timedelta(seconds=10 * booker.config.http_timeout_seconds))
    booker.core.work.enqueue(CHECK_KIND, {
        "referral_id": referral.id, "destination": destination.name, "slot": key},
        key=f"{CHECK_KIND}:{referral.id}:{uuid.uuid4().hex}",
        run_at=datetime.now(UTC) + wait)


def check_booking(booker: Booker, item: WorkItem) -> None:
    """Adopt or release the booking of the item's slot when the calendar has it and we do not."""
    payload = item.payload
    referral = booker.core.store.try_get(str(payload["referral_id"]))
    key = str(payload["slot"])
    if referral is None or any(key in row.slots
                               for row in booker.book_rows.of_referral(referral.id)):
        return
    destination = booker.config.destination(str(payload["destination"]))
    source = booker.sources.for_destination(destination) if destination else None
    find = getattr(source, "ours", None)
    if destination is None or find is None:
        return
    found: Booked | None = find(BookingRequest(referral.id, referral.patient,
                                               referral.service_request), key)
    if found is None:
        return
    with booker.core.db.read() as conn:
        if booker.book_rows.find(found.server, str(found.appointment["id"]), conn):
            return
    log.warning("scheduling: the calendar holds a booking that was never stored",
                extra={"referral_id": referral.id, "appointment": found.appointment["id"]})
    if booker.book_rows.current(referral.id) is None and \
            referral.stage in TABLE["schedule"].sources:
        booker.adopt(referral, destination, found.server, found.appointment, ADOPTED_BY)
    else:
        release(booker, referral, destination, found)


def release(booker: Booker, referral: Referral, destination: Destination,
            found: Booked) -> None:
    appointment_id = str(found.appointment["id"])
    payload: dict[str, Any] = {
        "referral_id": referral.id, "server": found.server, "appointment_id": appointment_id,
        "destination": destination.name,
        "reason": "booked on the calendar but never stored: the patient holds another "
                  "appointment, or the referral moved on"}
    booker.core.work.enqueue("scheduling.release", payload,
                             key=f"scheduling.release:{found.server}:{appointment_id}")
