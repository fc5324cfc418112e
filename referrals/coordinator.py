"""Coordinator tasks: a person must act on a referral (call the patient, rebook after a second
no-show, chase a consult note). Plain values and their FHIR Task rendering; no I/O.

A coordinator task is an operational child of the referral: a FHIR Task `partOf` the referral
Task, coded with its kind from a Refloop CodeSystem, owned by no one until a person records its
outcome. The store is referrals/store/tasks.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from referrals.errors import DomainError

KIND_SYSTEM = "http://refloop.org/fhir/CodeSystem/coordinator-task-kind"
OUTCOME_SYSTEM = "http://refloop.org/fhir/CodeSystem/coordinator-task-outcome"

OPEN, COMPLETED, CANCELLED = "open", "completed", "cancelled"

#: Task.status for each of our states (open: ready for a person to pick up)
FHIR_STATUS = {OPEN: "ready", COMPLETED: "completed", CANCELLED: "cancelled"}

#: display names of the kinds Refloop opens; other kinds show their code
KIND_LABELS = {
    "call-patient": "Call the patient",
    "rebook": "Rebook the appointment",
    "chase-note": "Chase the consult note",
    "read-reply": "Read the patient's reply",
    "check-delivery": "Check the patient got the message",
    "send-booking-link": "Help the patient book",
    "chase-authorization": "Chase the prior authorization with the payer",
}


class TaskError(DomainError):
    """A coordinator task cannot do what was asked (unknown outcome, already closed)."""


@dataclass(frozen=True)
class CoordinatorTask:
    id: str
    key: str
    referral_id: str
    kind: str
    reason: str
    status: str
    due_at: datetime | None
    outcomes: tuple[str, ...]
    on_outcome: str | None
    created_at: datetime
    data: dict[str, Any] = field(default_factory=dict)
    outcome: str | None = None
    actor: str = ""
    actor_display: str = ""
    note: str = ""
    closed_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.status == OPEN

    @property
    def label(self) -> str:
        return KIND_LABELS.get(self.kind, self.kind.replace("-", " "))

    def overdue(self, now: datetime) -> bool:
        return self.is_open and self.due_at is not None and self.due_at < now


def outcome_label(outcome: str) -> str:
    return outcome.replace("-", " ").capitalize()


def to_fhir(task: CoordinatorTask) -> dict[str, Any]:
    """The coordinator task as a FHIR R4 Task (JSON-ready), partOf the referral's Task."""
    resource: dict[str, Any] = {
        "resourceType": "Task",
        "id": task.id,
        "identifier": [{"system": "urn:refloop:coordinator-task", "value": task.key}],
        "partOf": [{"reference": f"Task/{task.referral_id}"}],
        "status": FHIR_STATUS[task.status],
        "intent": "order",
        "code": {"coding": [{"system": KIND_SYSTEM, "code": task.kind, "display": task.label}],
                 "text": task.label},
        "description": task.reason or None,
        "authoredOn": _instant(task.created_at),
        "lastModified": _instant(task.closed_at or task.created_at),
        "restriction": {"period": {"end": _instant(task.due_at)}} if task.due_at else None,
        "input": [{"type": {"text": "allowed-outcome"},
                   "valueCodeableConcept": {"coding": [{"system": OUTCOME_SYSTEM, "code": o}]}}
                  for o in task.outcomes] or None,
    }
    if task.outcome:
        resource["businessStatus"] = {"coding": [{"system": OUTCOME_SYSTEM,
                                                  "code": task.outcome}],
                                      "text": outcome_label(task.outcome)}
        resource["output"] = [{"type": {"text": "outcome"},
                               "valueCodeableConcept": {"coding": [{"system": OUTCOME_SYSTEM,
                                                                    "code": task.outcome}]}}]
        if task.note:
            resource["note"] = [{"text": task.note}]
    if task.actor:
        resource["owner"] = {"reference": task.actor, "display": task.actor_display or None}
        resource["owner"] = {k: v for k, v in resource["owner"].items() if v}
    return {k: v for k, v in resource.items() if v is not None}


def _instant(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
