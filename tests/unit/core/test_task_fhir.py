"""Task and Provenance JSON validate as FHIR (fhir.resources R4B models) in every stage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fhir.resources.R4B.provenance import Provenance
from fhir.resources.R4B.task import Task

from referrals.lifecycle import start, transition
from referrals.model import Actor, Command, Link, Reason, Referral, Stage
from referrals.task import to_provenance, to_task

AT = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
COORDINATOR = Actor("PractitionerRole/coord", "Casey Coordinator", "human")

#: a path through the lifecycle reaching each stage (the last action of each path)
PATHS: dict[Stage, list[str]] = {
    Stage.DETECTED: [],
    Stage.TRIAGE: ["triage"],
    Stage.ACCEPTED: ["triage", "accept"],
    Stage.DECLINED: ["decline"],
    Stage.COVERAGE_CHECK: ["accept", "check-coverage"],
    Stage.AUTH_PENDING: ["accept", "check-coverage", "request-authorization"],
    Stage.OUTREACH: ["accept", "request-authorization", "authorize"],
    Stage.SCHEDULED: ["accept", "start-outreach", "record-outreach", "schedule"],
    Stage.NO_SHOW: ["accept", "schedule", "no-show"],
    Stage.APPOINTMENT_CANCELLED: ["accept", "schedule", "cancel-appointment"],
    Stage.VISIT_COMPLETED: ["accept", "schedule", "complete-visit"],
    Stage.CANCEL_REQUESTED: ["accept", "request-cancel"],
    Stage.CANCELLED: ["accept", "request-cancel", "cancel"],
    Stage.LOOP_CLOSED: ["accept", "schedule", "complete-visit", "close-loop"],
    Stage.FAILED: ["accept", "start-outreach", "fail"],
    Stage.ON_HOLD: ["accept", "request-authorization", "hold"],
}
REASONS = {"decline": Reason("not-appropriate", "Better served by primary care"),
           "cancel": Reason("patient-request"), "hold": Reason("auth-denied", "Appeal pending"),
           "fail": Reason("unreachable", "No answer after 3 attempts")}


def drive(stage: Stage) -> tuple[Referral, list]:
    draft = Referral(id="7d0c2b9e-5d2f-4a51-9c53-1f3b1a2b3c4d", source_key="ehr|ServiceRequest/42",
                     service_request="ServiceRequest/42", patient="Patient/p1",
                     requester="Practitioner/npi-1234567890", priority="urgent",
                     specialty="cardiology", reason_text="Chest pain on exertion",
                     identifiers=(("urn:refloop:test", "42"),))
    change = start(draft, Command("detect", actor=Actor("Device/refloop-listener"), at=AT,
                                  source="fhir:ehr", source_message="notification-1"))
    events = [change.event]
    referral = change.referral
    for n, action in enumerate(PATHS[stage], start=1):
        changes = {"owner": "PractitionerRole/coord"} if action == "triage" else {}
        if action == "schedule":
            changes = {"add_outputs": [Link("appointment", "Appointment/a1", "Cardiology visit")]}
        if action == "accept":
            changes = {"add_inputs": [Link("coverage", "Coverage/c1")]}
        step = transition(referral, Command(action, actor=COORDINATOR,
                                            at=AT + timedelta(hours=n),
                                            reason=REASONS.get(action), changes=changes))
        referral = step.referral
        events.append(step.event)
    assert referral.stage == stage
    return referral, events


def test_paths_cover_every_stage() -> None:
    assert set(PATHS) == set(Stage)


@pytest.mark.parametrize("stage", list(Stage))
def test_task_validates_as_r4_task(stage: Stage) -> None:
    referral, _events = drive(stage)
    task = Task.model_validate(to_task(referral))
    assert task.focus.reference == task.basedOn[0].reference == "ServiceRequest/42"
    assert task.for_fhir.reference == "Patient/p1"
    assert task.requester.reference == "Practitioner/npi-1234567890"
    assert task.priority == "urgent" and task.intent == "order"
    if referral.deadline:
        assert task.restriction.period.end == referral.deadline
    if stage in (Stage.DECLINED, Stage.CANCELLED, Stage.FAILED, Stage.ON_HOLD):
        assert task.statusReason is not None and task.statusReason.coding[0].code
    else:
        assert task.statusReason is None


@pytest.mark.parametrize("stage", list(Stage))
def test_every_provenance_validates(stage: Stage) -> None:
    referral, events = drive(stage)
    for event in events:
        provenance = Provenance.model_validate(to_provenance(referral, event))
        assert provenance.target[0].reference == f"Task/{referral.id}/_history/{event.seq}"
        assert provenance.recorded == event.at
        assert provenance.activity.coding[0].code == event.action
        assert provenance.agent[0].who.reference == event.actor.reference
        if event.reason:
            assert provenance.reason[0].coding[0].code == event.reason.code
    first = to_provenance(referral, events[0])
    assert first["entity"][0]["what"]["identifier"]["value"] == "notification-1"


def test_task_carries_inputs_outputs_owner_and_identifiers() -> None:
    referral, _events = drive(Stage.LOOP_CLOSED)
    task = to_task(referral)
    assert task["input"][0]["valueReference"]["reference"] == "Coverage/c1"
    assert task["output"][0]["valueReference"] == {"reference": "Appointment/a1",
                                                   "display": "Cardiology visit"}
    assert task["identifier"] == [{"system": "urn:refloop:test", "value": "42"}]
    assert "restriction" not in task  # terminal: no deadline
    triaged, _ = drive(Stage.TRIAGE)
    assert to_task(triaged)["owner"] == {"reference": "PractitionerRole/coord"}
