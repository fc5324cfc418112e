"""The FHIR resources the loop writes to other servers, built from a referral (no I/O):

- the chase Task on a specialist's endpoint (BSeR/360X style: focus the referral's
  ServiceRequest, businessStatus 5.1.4 "event completed", asking for a consult note as output);
- the milestone Communication to the referrer's EHR, and the referral Task kept current there;
- the consult note (DocumentReference) delivered to the referrer's EHR, and the receipt Task in
  the CMS50 shape (code LOINC 11488-4, basedOn the referral, status completed,
  executionPeriod.end the receipt time, focus the note).

References to the referral's own resources are relative on the EHR the referral came from and
absolute elsewhere; a referral with no FHIR source names them by display only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from loop.milestones import Update
from referrals.model import Referral, source_server
from referrals.task import BSER_SYSTEM, to_task

REFERRAL_SYSTEM = "urn:refloop:referral"
UPDATE_SYSTEM = "urn:refloop:referrer-update"
DOCUMENT_SYSTEM = "urn:refloop:consult-note"
RECEIPT_SYSTEM = "urn:refloop:report-receipt"
MILESTONE_SYSTEM = "http://refloop.org/fhir/CodeSystem/referral-milestone"
LOINC = "http://loinc.org"
CONSULT_NOTE = {"system": LOINC, "code": "11488-4", "display": "Consult note"}
PLACER = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                      "code": "PLAC", "display": "Placer Identifier"}]}


def source_base(referral: Referral) -> str:
    """The FHIR base URL the referral came from ("" for v2 and other sources)."""
    server = source_server(referral.source_key)
    return server.rstrip("/") if server.startswith(("http://", "https://")) else ""


def reference_on(referral: Referral, reference: str, target: str) -> dict[str, str] | None:
    """`reference` (relative, on the referral's source EHR) as seen from server `target`."""
    if not reference:
        return None
    base = source_base(referral)
    if base and base == target.rstrip("/"):
        return {"reference": reference}
    if base:
        return {"reference": f"{base}/{reference}"}
    return {"display": reference}


def chase_task(referral: Referral, target: str, *, visit_at: datetime, due: datetime,
               sender: str) -> dict[str, Any]:
    """The request for the consult note, on the specialist's FHIR endpoint `target`."""
    task: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": [{"type": PLACER, "system": REFERRAL_SYSTEM, "value": referral.id}],
        "status": "requested", "intent": "order", "priority": referral.priority,
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                             "code": "fulfill", "display": "Fulfill the focal request"}]},
        "businessStatus": {"coding": [{"system": BSER_SYSTEM, "code": "5.1.4",
                                       "display": "Service Request Event Completed"}],
                           "text": "Visit completed; consult note requested"},
        "description": f"Please send the consult note for the visit of {visit_at:%Y-%m-%d} "
                       f"(referral {referral.id}).",
        "focus": reference_on(referral, referral.service_request, target),
        "basedOn": [reference_on(referral, referral.service_request, target)],
        "for": reference_on(referral, referral.patient, target),
        "authoredOn": instant(visit_at),
        "requester": reference_on(referral, referral.requester, target) or {"display": sender},
        "owner": reference_on(referral, referral.performer, target),
        "restriction": {"period": {"end": instant(due)}},
        "input": [{"type": {"text": "requested output"},
                   "valueCodeableConcept": {"coding": [CONSULT_NOTE]}}],
    }
    return _clean(task)


def communication(referral: Referral, update: Update, target: str, *, seq: int,
                  sent: datetime, sender: str) -> dict[str, Any]:
    """A milestone update as a Communication on the referrer's EHR `target`."""
    return _clean({
        "resourceType": "Communication",
        "identifier": [{"system": UPDATE_SYSTEM, "value": f"{referral.id}:{seq}"}],
        "basedOn": [reference_on(referral, referral.service_request, target)],
        "status": "completed",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/communication-category",
            "code": "notification"}]}],
        "subject": reference_on(referral, referral.patient, target),
        "topic": {"coding": [{"system": MILESTONE_SYSTEM, "code": update.milestone}],
                  "text": update.milestone.replace("-", " ")},
        "sent": instant(sent),
        "recipient": [reference_on(referral, referral.requester, target)],
        "sender": {"display": sender},
        "payload": [{"contentString": update.text}],
    })


def referral_task(referral: Referral, target: str) -> dict[str, Any]:
    """The referral Task as the referrer's EHR keeps it (BSeR/360X: the Task carries the
    state), identified by our referral id; its id is the server's own."""
    task = to_task(referral)
    task.pop("id", None)
    task.pop("meta", None)
    task.pop("owner", None)
    task.pop("input", None)
    task.pop("output", None)
    task["identifier"] = [{"type": PLACER, "system": REFERRAL_SYSTEM, "value": referral.id}]
    task["basedOn"] = [reference_on(referral, referral.service_request, target)]
    task["focus"] = reference_on(referral, referral.service_request, target)
    task["for"] = reference_on(referral, referral.patient, target)
    task["requester"] = reference_on(referral, referral.requester, target)
    return _clean(task)


def delivered_note(referral: Referral, document: dict[str, Any], key: str, target: str,
                   content: list[dict[str, Any]]) -> dict[str, Any]:
    """The consult note as written to the referrer's EHR: its own identifier, the referral's
    patient and order, the attachment data inline."""
    note: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "identifier": [{"system": DOCUMENT_SYSTEM, "value": key}],
        "status": "current",
        "docStatus": document.get("docStatus"),
        "type": document.get("type") or {"coding": [CONSULT_NOTE]},
        "subject": reference_on(referral, referral.patient, target),
        "date": document.get("date"),
        "description": document.get("description"),
        "context": {"related": [reference_on(referral, referral.service_request, target)]},
        "content": content,
    }
    return _clean(note)


def receipt_task(referral: Referral, note: str, received: datetime, key: str, *,
                 target: str = "") -> dict[str, Any]:
    """The report-receipt Task CMS50 counts. `note` is the DocumentReference reference on
    `target` ("" = our own store, where the referral's references are as stored)."""
    def ref(reference: str) -> dict[str, str] | None:
        return reference_on(referral, reference, target) if target else \
            ({"reference": reference} if reference else None)

    return _clean({
        "resourceType": "Task",
        "identifier": [{"system": RECEIPT_SYSTEM, "value": key}],
        "basedOn": [ref(referral.service_request)],
        "status": "completed", "intent": "order",
        "code": {"coding": [CONSULT_NOTE], "text": "Consultant report received"},
        "focus": {"reference": note},
        "for": ref(referral.patient),
        "authoredOn": instant(received),
        "lastModified": instant(received),
        "executionPeriod": {"end": instant(received)},
        "owner": ref(referral.requester),
        "output": [{"type": {"coding": [CONSULT_NOTE]}, "valueReference": {"reference": note}}],
    })


def instant(moment: datetime) -> str:
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _clean(resource: dict[str, Any]) -> dict[str, Any]:
    """Drop empty values (and Nones inside lists) so the server sees no nulls."""
    out: dict[str, Any] = {}
    for key, value in resource.items():
        if isinstance(value, list):
            value = [v for v in value if v]
        if value in (None, "", [], {}):
            continue
        out[key] = value
    return out
