"""What every slot source offers and books: plain values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from referrals.errors import DomainError

#: identifier system of the Appointments we create (value: referral id and slot), so a retried
#: booking finds the Appointment it already made instead of making a second one
APPOINTMENT_SYSTEM = "http://refloop.org/fhir/sid/appointment-request"


class SlotTaken(DomainError):
    """Somebody else booked the slot first (or it is no longer offered)."""


@dataclass(frozen=True)
class SlotOption:
    """One bookable time as the patient sees it; `key` is what the page posts back."""

    key: str
    start: datetime
    end: datetime | None
    location: str = ""
    clinician: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def local(self, zone: Any) -> datetime:
        return self.start.astimezone(zone)


@dataclass(frozen=True)
class BookingRequest:
    """Who is booked and why: the referral's patient, ServiceRequest and a stable identifier."""

    referral_id: str
    patient: str
    service_request: str
    patient_display: str = ""
    comment: str = ""

    def identifier(self, option: SlotOption) -> str:
        return self.identifier_for(option.key)

    def identifier_for(self, key: str) -> str:
        return f"{self.referral_id}:{key.rsplit('/', 1)[-1]}"


@dataclass(frozen=True)
class Booked:
    """The Appointment as the calendar stored it, and where."""

    server: str
    appointment: dict[str, Any]


@dataclass(frozen=True)
class Handoff:
    """A calendar we cannot book into ourselves: the patient goes on elsewhere (a deep link)."""

    url: str


class SlotSource(Protocol):
    kind: str

    def find(self, after: datetime, until: datetime, limit: int) -> list[SlotOption]:
        """Free slots starting after `after` (exclusive) and before `until`, soonest first."""

    def get(self, key: str) -> SlotOption | None:
        """The slot a page posted back, if it belongs to this destination and is still free."""

    def book(self, option: SlotOption, request: BookingRequest) -> Booked | Handoff:
        """Book it, or raise SlotTaken when somebody else was first."""

    def cancel(self, server: str, appointment_id: str, reason: str) -> list[str]:
        """Cancel the Appointment and free its slots; returns the freed slot keys."""


def parse_instant(value: Any) -> datetime | None:
    """A FHIR instant/dateTime as aware UTC; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def instant(moment: datetime) -> str:
    """`moment` as a FHIR instant in UTC, to the second."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
