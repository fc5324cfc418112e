"""The demo's data: the fixture of synthetic referrals, their FHIR resources, and loading one
referral with the path its fixture item prescribes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from referrals.errors import IllegalTransition
from referrals.model import (
    LINK_CONSULT_NOTE,
    Actor,
    Command,
    Link,
    Reason,
    Referral,
    new_referral_id,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "demo" / "referrals.json"
#: one referral a legacy EHR sends as HL7 v2 (REF^I12 with its insurance in IN1)
V2_REFERRAL = FIXTURES.parent / "v2_referral.hl7"
DEMO_SERVER = "demo"
COORDINATOR = Actor("PractitionerRole/coordinator-1", "Casey Coordinator", "human")
REASONS = {"decline": Reason("not-appropriate", "Better served by primary care"),
           "hold": Reason("auth-denied", "Payer denied prior authorization; appeal pending"),
           "cancel": Reason("patient-request", "Patient cancelled the referral"),
           "fail": Reason("unreachable", "Patient unreachable after repeated outreach")}

def load_referral(services: Any, item: dict[str, Any]) -> int:
    """Store the item's FHIR resources, open its referral and apply its path. 1 if new."""
    resources = demo_resources(item)
    for resource in resources.values():
        services.resources.put(resource, server=DEMO_SERVER)
    started = datetime.now(UTC) - timedelta(days=item["age_days"], hours=3)
    draft = Referral(
        id=new_referral_id(), source_key=f"{DEMO_SERVER}|ServiceRequest/{item['key']}",
        service_request=f"ServiceRequest/{item['key']}", patient=f"Patient/{item['key']}",
        requester=f"Practitioner/{item['requester']['npi']}", priority=item["priority"],
        specialty=item["specialty"], reason_text=f"{item['display']}: {item['reason']['display']}",
        payer=item["payer"]["name"], identifiers=(("urn:refloop:demo", item["key"]),),
    )
    listener = Actor("Device/refloop-demo", "Demo loader")
    referral, new = services.referrals.open(draft, Command("detect", actor=listener, at=started,
                                                           source="demo"))
    if not new:
        return 0
    moment = started
    for action in item["path"]:
        moment += timedelta(hours=7)
        changes: dict[str, Any] = {}
        if action == "triage":
            changes["owner"] = COORDINATOR.reference
        if action == "schedule":
            changes["add_outputs"] = [_link("appointment", f"Appointment/{item['key']}")]
        if action == "close-loop":
            changes["add_outputs"] = [_link(LINK_CONSULT_NOTE, f"DocumentReference/{item['key']}")]
        try:
            referral = services.referrals.act(referral.id, Command(
                action, actor=COORDINATOR, at=min(moment, datetime.now(UTC)),
                reason=REASONS.get(action), source="demo", changes=changes))
        except IllegalTransition as exc:
            raise click.ClickException(f"demo fixture {item['key']}: {exc}") from exc
    return 1


def demo_resources(item: dict[str, Any]) -> dict[str, dict[str, Any]]:
    key, patient, payer = item["key"], item["patient"], item["payer"]
    return {
        "Patient": {"resourceType": "Patient", "id": key,
                    "identifier": [{"system": "urn:refloop:demo:mrn", "value": patient["mrn"]}],
                    "name": [{"family": patient["family"], "given": [patient["given"]]}],
                    "gender": patient["gender"], "birthDate": patient["birthDate"]},
        "Coverage": {"resourceType": "Coverage", "id": key, "status": "active",
                     "subscriberId": payer["member"],
                     "beneficiary": {"reference": f"Patient/{key}"},
                     "payor": [{"display": payer["name"],
                                "identifier": {"value": payer["id"]}}]},
        "ServiceRequest": {
            "resourceType": "ServiceRequest", "id": key, "status": "active", "intent": "order",
            "priority": item["priority"],
            "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "3457005",
                                      "display": "Patient referral"}]}],
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": item["code"],
                                 "display": item["display"]}]},
            "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm",
                                        "code": item["reason"]["code"],
                                        "display": item["reason"]["display"]}]}],
            "subject": {"reference": f"Patient/{key}"},
            "requester": {"reference": f"Practitioner/{item['requester']['npi']}",
                          "display": item["requester"]["name"]},
            "insurance": [{"reference": f"Coverage/{key}"}]},
    }


def _link(kind: str, reference: str) -> Link:
    return Link(kind, reference)
