"""The referral and its events: plain values, no I/O (DESIGN.md rule 5)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from referrals.ids import time_ordered_id


class Stage(StrEnum):
    """Internal referral stages (landscape.md §2.6), each mapped to a Task.status and BSeR code."""

    DETECTED = "detected"
    TRIAGE = "triage"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    COVERAGE_CHECK = "coverage-check"
    AUTH_PENDING = "auth-pending"
    OUTREACH = "outreach"
    SCHEDULED = "scheduled"
    NO_SHOW = "no-show"
    APPOINTMENT_CANCELLED = "appointment-cancelled"
    VISIT_COMPLETED = "visit-completed"
    CANCEL_REQUESTED = "cancel-requested"
    CANCELLED = "cancelled"
    LOOP_CLOSED = "loop-closed"
    FAILED = "failed"
    ON_HOLD = "on-hold"


TERMINAL_STAGES = frozenset({Stage.DECLINED, Stage.CANCELLED, Stage.LOOP_CLOSED, Stage.FAILED})

PRIORITIES = ("routine", "urgent", "asap", "stat")


@dataclass(frozen=True)
class Reason:
    """A coded reason (Task.statusReason, a decline or hold reason)."""

    code: str
    text: str = ""


#: Link types: the FHIR resource name of what is linked. Every writer uses these; a reader asks
#: `Link.is_a`, which also accepts the older words stored Tasks may hold.
LINK_APPOINTMENT = "Appointment"
#: a consult note (or any report of the visit) linked as an output
LINK_CONSULT_NOTE = "DocumentReference"
#: older link types -> the type they mean ('consult-note' before the notes had one name)
_OLD_TYPES = {"consult-note": LINK_CONSULT_NOTE.casefold()}


def _link_type(kind: str) -> str:
    folded = kind.casefold()
    return _OLD_TYPES.get(folded, folded)


@dataclass(frozen=True)
class Link:
    """A typed reference kept on the Task as input or output (Appointment, DocumentReference...)."""

    type: str
    reference: str
    display: str = ""

    def is_a(self, kind: str) -> bool:
        """Whether the link is of type `kind`: in any case ('Appointment', as written now, or
        'appointment', as older code and stored Tasks have it), and an older word for the same
        type ('consult-note' is a LINK_CONSULT_NOTE)."""
        return _link_type(self.type) == _link_type(kind)


@dataclass(frozen=True)
class Clock:
    """A program's deadline on a referral (referrals/closed_loop.py names the programs): TEAM's
    primary-care visit within 30 days of discharge, ASM's specialist feedback to the primary-care
    clinician. `goal` says what meets it: the visit, or the report reaching the referrer.

    A clock never pauses (a hold does not stop a regulatory clock); it ends met or missed, and a
    missed clock may still be met later (late)."""

    program: str
    goal: str
    started_at: datetime
    due_at: datetime
    met_at: datetime | None = None
    missed_at: datetime | None = None

    @property
    def open(self) -> bool:
        """Still running: neither met nor missed."""
        return self.met_at is None and self.missed_at is None


@dataclass(frozen=True)
class Referral:
    """Current state of one referral; the FHIR Task is produced from it."""

    id: str
    source_key: str
    service_request: str
    patient: str
    stage: Stage = Stage.DETECTED
    requester: str = ""
    performer: str = ""
    owner: str = ""
    priority: str = "routine"
    specialty: str = ""
    reason_text: str = ""
    payer: str = ""
    auth_state: str = ""
    held_from: Stage | None = None
    status_reason: Reason | None = None
    deadline: datetime | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    version: int = 0
    outreach_attempts: int = 0
    inputs: tuple[Link, ...] = ()
    outputs: tuple[Link, ...] = ()
    identifiers: tuple[tuple[str, str], ...] = ()
    clocks: tuple[Clock, ...] = ()

    @property
    def terminal(self) -> bool:
        return self.stage in TERMINAL_STAGES

    def evolve(self, **changes: Any) -> Referral:
        return replace(self, **changes)

    def clock(self, program: str) -> Clock | None:
        return next((c for c in self.clocks if c.program == program), None)


#: the longest specialty and payer a referral holds (their columns): longer ones are cut
SPECIALTY_MAX = 128
PAYER_MAX = 256


def new_referral_id() -> str:
    """A time-ordered id (a version 7 UUID, referrals/ids.py): a new referral's entries in the
    referral table's key, its events and the v2 bridge's key index go beside the last ones."""
    return time_ordered_id()


def source_server(source_key: str) -> str:
    """Where the resources that came with a referral are held (ResourceStore `server`).

    A source key is `<adapter>|<origin>|<key>` (or `<adapter>|<key>`): FHIR referrals keep
    their resources under the EHR's base URL (`fhir|<base>|...`), others under
    `<adapter>:<origin>` (`hl7|GPSYS^GPCLINIC|...` -> `hl7:GPSYS^GPCLINIC`), and a two-part key
    under `<adapter>` (`demo|...` -> `demo`)."""
    parts = source_key.split("|", 2)
    if len(parts) < 3:
        return parts[0]
    kind, origin, _ = parts
    return origin if kind == "fhir" else f"{kind}:{origin}"


def source_key_prefixes(servers: tuple[str, ...]) -> tuple[str, ...]:
    """The source-key beginnings of referrals that came from these FHIR servers (each with and
    without one trailing slash): what a launch's patient can be matched within, since
    `Patient/p1` on one server is not `Patient/p1` on another."""
    bases = {b for s in servers for b in (s.rstrip("/"), s.rstrip("/") + "/") if s}
    return tuple(sorted(f"fhir|{base}|" for base in bases))


@dataclass(frozen=True)
class Actor:
    """Who did it: a FHIR reference (Practitioner/1, Device/refloop-listener) and a display."""

    reference: str
    display: str = ""
    kind: str = "system"  # system | human


SYSTEM = Actor("Device/refloop", "Refloop", "system")


@dataclass(frozen=True)
class Command:
    """What someone asks the lifecycle to do; `changes` carries the details the action sets."""

    action: str
    actor: Actor = SYSTEM
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    reason: Reason | None = None
    source: str = ""
    source_message: str = ""
    changes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    """One entry of the append-only event log."""

    referral_id: str
    seq: int
    action: str
    from_stage: Stage | None
    to_stage: Stage
    actor: Actor
    at: datetime
    reason: Reason | None = None
    source: str = ""
    source_message: str = ""
    data: dict[str, Any] = field(default_factory=dict)
