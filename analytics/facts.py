"""What one referral's event history says, as the metrics need it: its milestones, its outcome
and who did its steps. A pure function of the referral and its events (docs/metrics.md defines
every field); nothing here reads a counter kept on the side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from referrals import closed_loop as loop
from referrals.model import TERMINAL_STAGES, Event, Referral, Stage

#: stages in which the recipient has taken the patient on (BSeR 3.0 and later, loop closed)
ACCEPTED_OR_LATER = frozenset({
    Stage.ACCEPTED, Stage.COVERAGE_CHECK, Stage.AUTH_PENDING, Stage.OUTREACH, Stage.SCHEDULED,
    Stage.NO_SHOW, Stage.APPOINTMENT_CANCELLED, Stage.VISIT_COMPLETED, Stage.LOOP_CLOSED,
})
#: an authorization decision, as `auth_state` records it (pas_client: final statuses)
AUTH_DECISIONS = frozenset({"approved", "modified", "partially-approved", "no-auth-required",
                            "denied"})
#: actor references of people (anything else, Device/... above all, is Refloop or a system)
PERSON_PREFIXES = ("Practitioner/", "PractitionerRole/", "Patient", "RelatedPerson/")
#: the referral ended without a visit: how
DROPPED = frozenset({Stage.DECLINED, Stage.CANCELLED, Stage.FAILED})


@dataclass(frozen=True)
class Facts:
    """One referral as the metrics see it. Times are aware UTC; None: it did not happen."""

    referral_id: str
    source_key: str
    patient: str
    specialty: str
    referrer: str
    destination: str
    payer: str
    priority: str
    detected_at: datetime
    stage: str
    open: bool
    deadline: datetime | None
    #: the referring provider withdrew it (the referral ended cancelled)
    withdrawn: bool
    accepted_at: datetime | None
    contacted_at: datetime | None
    scheduled_at: datetime | None
    visit_at: datetime | None
    note_at: datetime | None
    receipt_at: datetime | None
    auth_requested_at: datetime | None
    auth_decided_at: datetime | None
    ended_at: datetime | None
    no_shows: int
    #: for a referral that ended without a visit: its end stage and the reason code given
    dropped: str
    drop_reason: str
    steps_refloop: int
    steps_person: int
    last_seq: int
    #: program clocks (referrals/closed_loop.py): when due, met, ran out (None: no such clock)
    team_due_at: datetime | None = None
    team_met_at: datetime | None = None
    team_missed_at: datetime | None = None
    asm_due_at: datetime | None = None
    asm_met_at: datetime | None = None
    asm_missed_at: datetime | None = None

    def to_row(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_row(cls, row: Any) -> Facts:
        return cls(**{f.name: row[f.name] for f in fields(cls)})


def facts_from(referral: Referral, events: Sequence[Event]) -> Facts:
    """The facts of `referral` from its whole event log (events in `seq` order)."""
    ordered = sorted(events, key=lambda e: e.seq)
    first: dict[str, datetime] = {}

    def mark(name: str, at: datetime) -> None:
        if name not in first or at < first[name]:
            first[name] = at

    no_shows = person = 0
    requested: datetime | None = None
    decided: datetime | None = None
    end: Event | None = None
    for event in ordered:
        action, at = event.action, event.at
        if is_person(event.actor.reference):
            person += 1
        if action == "detect":
            mark("detected", at)
        if event.to_stage in ACCEPTED_OR_LATER and event.from_stage is not None:
            mark("accepted", at)
        if action == "record-outreach" or _adds_output(event, "Communication/"):
            mark("contacted", at)
        if action == "schedule":
            mark("scheduled", at)
        if action == "no-show":
            no_shows += 1
        note = action == "close-loop" or _adds_output(event, "DocumentReference/")
        if note:
            mark("note", at)
        if note or action in ("complete-visit", loop.RECORD_RECEIPT):
            mark("visit", at)
        if action == loop.RECORD_RECEIPT:
            mark("receipt", at)
        if action == "request-authorization" and requested is None:
            requested = at
        if requested is not None and decided is None and at >= requested and (
                action == "authorize" or event.data.get("auth_state") in AUTH_DECISIONS):
            decided = at
        if event.to_stage in TERMINAL_STAGES and event.from_stage not in TERMINAL_STAGES:
            end = event
    stage = referral.stage
    dropped = stage if stage in DROPPED else None
    return Facts(
        referral_id=referral.id, source_key=referral.source_key, patient=referral.patient,
        specialty=referral.specialty, referrer=referral.requester,
        destination=referral.performer, payer=referral.payer, priority=referral.priority,
        detected_at=first.get("detected", referral.created_at), stage=stage.value,
        open=stage not in TERMINAL_STAGES, deadline=referral.deadline,
        withdrawn=stage == Stage.CANCELLED,
        accepted_at=first.get("accepted"), contacted_at=first.get("contacted"),
        scheduled_at=first.get("scheduled"), visit_at=first.get("visit"),
        note_at=first.get("note"), receipt_at=first.get("receipt"),
        auth_requested_at=requested, auth_decided_at=decided,
        ended_at=end.at if end is not None and stage in TERMINAL_STAGES else None,
        no_shows=no_shows, dropped=dropped.value if dropped else "",
        drop_reason=_reason(end, referral) if dropped else "",
        steps_refloop=len(ordered) - person, steps_person=person,
        last_seq=ordered[-1].seq if ordered else 0, **_clocks(referral),
    )


def _clocks(referral: Referral) -> dict[str, datetime | None]:
    """The program clocks as the lifecycle folded their start, meet and miss events."""
    found: dict[str, datetime | None] = {}
    for program in (loop.TEAM, loop.ASM):
        clock = referral.clock(program)
        found[f"{program}_due_at"] = clock.due_at if clock else None
        found[f"{program}_met_at"] = clock.met_at if clock else None
        found[f"{program}_missed_at"] = clock.missed_at if clock else None
    return found


def is_person(reference: str) -> bool:
    """A step done by a person (staff, the patient) rather than by Refloop or another system."""
    return reference.startswith(PERSON_PREFIXES)


def _adds_output(event: Event, prefix: str) -> bool:
    outputs = event.data.get("add_outputs") or ()
    return any(str(link.get("reference", "")).startswith(prefix)
               for link in outputs if isinstance(link, dict))


def _reason(end: Event | None, referral: Referral) -> str:
    if end is not None and end.reason is not None:
        return end.reason.code
    return referral.status_reason.code if referral.status_reason else ""
