"""The resources the loop writes to other servers: references relative on the EHR the referral
came from and absolute elsewhere; the chase Task; the receipt Task in the CMS50 shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from loop.fhir import (
    RECEIPT_SYSTEM,
    REFERRAL_SYSTEM,
    chase_task,
    communication,
    receipt_task,
    reference_on,
    referral_task,
)
from loop.milestones import Update
from referrals.model import Referral, Stage

EHR = "https://riverside.example/fhir"
HEART = "https://heart.example/fhir"
AT = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)


def referral(source: str = f"fhir|{EHR}|ServiceRequest/sr-9", stage: Stage = Stage.LOOP_CLOSED
             ) -> Referral:
    return Referral(id="r-1", source_key=source, service_request="ServiceRequest/sr-9",
                    patient="Patient/p-1", requester="Practitioner/dr-7", stage=stage,
                    priority="urgent")


def test_references_are_relative_on_the_source_absolute_elsewhere_display_without_fhir() -> None:
    r = referral()
    assert reference_on(r, "Patient/p-1", f"{EHR}/") == {"reference": "Patient/p-1"}
    assert reference_on(r, "Patient/p-1", HEART) == {"reference": f"{EHR}/Patient/p-1"}
    v2 = referral("hl7|GPSYS^GPCLINIC|REF-1^GPCLINIC")
    assert reference_on(v2, "Patient/p-1", HEART) == {"display": "Patient/p-1"}
    assert reference_on(r, "", HEART) is None


def test_the_chase_task_asks_the_specialist_for_the_consult_note() -> None:
    task = chase_task(referral(stage=Stage.VISIT_COMPLETED), HEART, visit_at=AT,
                      due=AT + timedelta(days=7), sender="Riverside referrals")
    assert task["identifier"][0]["system"] == REFERRAL_SYSTEM
    assert task["identifier"][0]["type"]["coding"][0]["code"] == "PLAC"
    assert (task["status"], task["intent"], task["priority"]) == ("requested", "order", "urgent")
    assert task["focus"] == {"reference": f"{EHR}/ServiceRequest/sr-9"}
    assert task["businessStatus"]["coding"][0]["code"] == "5.1.4"
    assert task["restriction"]["period"]["end"] == "2026-03-09T15:30:00.000Z"
    assert task["input"][0]["valueCodeableConcept"]["coding"][0]["code"] == "11488-4"
    assert "owner" not in task  # no performer known: no empty reference


def test_the_receipt_task_has_the_shape_cms50_counts() -> None:
    task = receipt_task(referral(), "DocumentReference/n1", AT, "k1", target=EHR)
    assert task["code"]["coding"][0] == {"system": "http://loinc.org", "code": "11488-4",
                                         "display": "Consult note"}
    assert (task["status"], task["intent"]) == ("completed", "order")
    assert task["basedOn"] == [{"reference": "ServiceRequest/sr-9"}]
    assert task["executionPeriod"] == {"end": "2026-03-02T15:30:00.000Z"}
    assert task["focus"] == {"reference": "DocumentReference/n1"}
    assert task["owner"] == {"reference": "Practitioner/dr-7"}
    assert task["identifier"] == [{"system": RECEIPT_SYSTEM, "value": "k1"}]
    ours = receipt_task(referral(), "DocumentReference/n1", AT, "k1")
    assert ours["basedOn"] == [{"reference": "ServiceRequest/sr-9"}]


def test_the_milestone_and_the_referral_task_on_the_referrers_ehr() -> None:
    message = communication(referral(), Update("declined", "Declined: no capacity.", "R"), EHR,
                            seq=4, sent=AT, sender="Riverside referrals")
    assert message["identifier"] == [{"system": "urn:refloop:referrer-update",
                                      "value": "r-1:4"}]
    assert message["topic"]["coding"][0]["code"] == "declined"
    assert message["recipient"] == [{"reference": "Practitioner/dr-7"}]
    assert message["payload"] == [{"contentString": "Declined: no capacity."}]
    task = referral_task(referral(), EHR)
    assert "id" not in task and "meta" not in task
    assert task["businessStatus"]["coding"][0]["code"] == "7.0"
    assert task["identifier"][0]["value"] == "r-1"
