"""FHIR R4 Task and Provenance built from a referral and its events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from referrals.model import Clock, Event, Referral, Stage

BSER_SYSTEM = "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS"
STAGE_SYSTEM = "http://refloop.org/fhir/CodeSystem/referral-stage"
REASON_SYSTEM = "http://refloop.org/fhir/CodeSystem/referral-status-reason"
ACTION_SYSTEM = "http://refloop.org/fhir/CodeSystem/referral-action"
ROLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
#: a program clock on the Task (referrals/closed_loop.py): program, goal, start, due, met, missed
CLOCK_EXTENSION = "http://refloop.org/fhir/StructureDefinition/program-clock"

#: stage -> (Task.status, BSeR code, BSeR display); None where BSeR has no code.
STAGE_MAP: dict[Stage, tuple[str, tuple[str, str] | None]] = {
    Stage.DETECTED: ("requested", ("2.0", "Service Request Created")),
    Stage.TRIAGE: ("received", ("2.0", "Service Request Created")),
    Stage.ACCEPTED: ("accepted", ("3.0", "Service Request Accepted")),
    Stage.DECLINED: ("rejected", ("4.0", "Service Request Declined")),
    Stage.COVERAGE_CHECK: ("in-progress", ("3.0", "Service Request Accepted")),
    Stage.AUTH_PENDING: ("in-progress", ("3.0", "Service Request Accepted")),
    Stage.OUTREACH: ("in-progress", ("3.0", "Service Request Accepted")),
    Stage.SCHEDULED: ("in-progress", ("5.1.1", "Service Request Event Scheduled")),
    Stage.NO_SHOW: ("in-progress", ("5.1.2", "Scheduled Event Unattended")),
    Stage.APPOINTMENT_CANCELLED: ("in-progress", ("5.1.3", "Scheduled Event Cancelled")),
    Stage.VISIT_COMPLETED: ("in-progress", ("5.1.4", "Service Request Event Completed")),
    Stage.CANCEL_REQUESTED: ("in-progress", ("5.2", "Cancellation Requested")),
    Stage.CANCELLED: ("cancelled", ("6.0", "Service Request Fulfillment Cancelled")),
    Stage.LOOP_CLOSED: ("completed", ("7.0", "Service Request Fulfillment Completed")),
    Stage.FAILED: ("failed", None),
    Stage.ON_HOLD: ("on-hold", None),
}


def task_status(referral: Referral) -> str:
    return STAGE_MAP[referral.stage][0]


def bser_code(referral: Referral) -> str | None:
    """The BSeR business status; on hold keeps the code of the stage it paused."""
    stage = referral.held_from if referral.stage == Stage.ON_HOLD else referral.stage
    bser = STAGE_MAP[stage][1] if stage else None
    return bser[0] if bser else None


def to_task(referral: Referral) -> dict[str, Any]:
    """The referral as a FHIR R4 Task (JSON-ready dict)."""
    task: dict[str, Any] = {
        "resourceType": "Task",
        "id": referral.id,
        "meta": {"versionId": str(referral.version), "lastUpdated": _instant(referral.updated_at)},
        "extension": [_clock(clock) for clock in referral.clocks] or None,
        "identifier": [{"system": system, "value": value}
                       for system, value in referral.identifiers] or None,
        "basedOn": [{"reference": referral.service_request}],
        "status": task_status(referral),
        "statusReason": _reason(referral),
        "businessStatus": _business_status(referral),
        "intent": "order",
        "priority": referral.priority,
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                             "code": "fulfill", "display": "Fulfill the focal request"}]},
        "description": referral.reason_text or None,
        "focus": {"reference": referral.service_request},
        "for": {"reference": referral.patient},
        "authoredOn": _instant(referral.created_at),
        "lastModified": _instant(referral.updated_at),
        "requester": _ref(referral.requester),
        "owner": _ref(referral.owner),
        "restriction": ({"period": {"end": _instant(referral.deadline)}}
                        if referral.deadline else None),
        "input": [_parameter(link.type, link.reference, link.display) for link in referral.inputs]
        or None,
        "output": [_parameter(link.type, link.reference, link.display)
                   for link in referral.outputs] or None,
    }
    return {k: v for k, v in task.items() if v is not None}


def to_provenance(referral: Referral, event: Event) -> dict[str, Any]:
    """Provenance for the Task version an event produced: who, when, why, from which message."""
    agent: dict[str, Any] = {
        "type": {"coding": [{"system": ROLE_SYSTEM, "code": "author" if event.actor.kind ==
                             "human" else "assembler"}]},
        "who": _ref(event.actor.reference, event.actor.display),
    }
    provenance: dict[str, Any] = {
        "resourceType": "Provenance",
        "id": f"{referral.id}-{event.seq}",
        "target": [{"reference": f"Task/{referral.id}/_history/{event.seq}"}],
        "recorded": _instant(event.at),
        "activity": {"coding": [{"system": ACTION_SYSTEM, "code": event.action}]},
        "reason": [{"coding": [{"system": REASON_SYSTEM, "code": event.reason.code}],
                    "text": event.reason.text or event.reason.code}] if event.reason else None,
        "agent": [agent],
    }
    if event.source:
        provenance["entity"] = [{"role": "source", "what": {"display": event.source,
                                 "identifier": {"value": event.source_message or event.source}}}]
    return {k: v for k, v in provenance.items() if v is not None}


def _clock(clock: Clock) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"url": "program", "valueCode": clock.program},
                                   {"url": "goal", "valueCode": clock.goal},
                                   {"url": "start", "valueDateTime": _instant(clock.started_at)},
                                   {"url": "due", "valueDateTime": _instant(clock.due_at)}]
    if clock.met_at is not None:
        parts.append({"url": "met", "valueDateTime": _instant(clock.met_at)})
    if clock.missed_at is not None:
        parts.append({"url": "missed", "valueDateTime": _instant(clock.missed_at)})
    return {"url": CLOCK_EXTENSION, "extension": parts}


def _business_status(referral: Referral) -> dict[str, Any]:
    coding = []
    code = bser_code(referral)
    if code:
        stage = referral.held_from if referral.stage == Stage.ON_HOLD else referral.stage
        bser = STAGE_MAP[stage][1] if stage else None
        coding.append({"system": BSER_SYSTEM, "code": code, "display": bser[1] if bser else code})
    coding.append({"system": STAGE_SYSTEM, "code": referral.stage.value})
    return {"coding": coding, "text": referral.stage.value}


def _reason(referral: Referral) -> dict[str, Any] | None:
    reason = referral.status_reason
    if reason is None:
        return None
    return {"coding": [{"system": REASON_SYSTEM, "code": reason.code}],
            "text": reason.text or reason.code}


def _parameter(kind: str, reference: str, display: str) -> dict[str, Any]:
    return {"type": {"coding": [{"system": STAGE_SYSTEM, "code": kind}], "text": kind},
            "valueReference": _ref(reference, display)}


def _ref(reference: str, display: str = "") -> dict[str, str] | None:
    if not reference:
        return None
    ref = {"reference": reference}
    if display:
        ref["display"] = display
    return ref


def _instant(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")
