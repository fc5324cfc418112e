"""IN1 (and the IN2 after it) -> Coverage, its payer Organization and, when the insured is not
the patient, a RelatedPerson (IG IN1[Coverage]; IN2 has no IG map yet: our choices, see
docs/hl7v2.md).

IN1-2 plan id -> identifier; IN1-3 company id and IN1-4 name -> payor Organization (IN1-5
address, IN1-7 phone); IN1-8/9 group -> class; IN1-12/13 -> period; IN1-15 -> type; IN1-16/17
-> subscriber and relationship (Patient when IN1-17 is self, else RelatedPerson with IN1-16
name, IN1-18 birth date, IN1-19 address); member id: IN1-49 insured's id (IG), else IN1-36
policy number -> subscriberId and an MB identifier. IN2: IN2-2 insured's SSN and IN2-63 phone
-> the RelatedPerson; IN2-6 Medicare and IN2-8 Medicaid numbers and IN2-61 patient member
number -> identifiers.
"""

from __future__ import annotations

from typing import Any

from hl7_bridge.config import SenderConfig
from hl7_bridge.datatypes import (
    Memo,
    code_system,
    stable_id,
    to_address,
    to_codeable,
    to_date,
    to_human_name,
    to_identifier,
    to_telecom,
)
from hl7_bridge.message import Message, Segment

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
RELATIONSHIP = "http://terminology.hl7.org/CodeSystem/subscriber-relationship"
COVERAGE_CLASS = "http://terminology.hl7.org/CodeSystem/coverage-class"
US_SSN = "http://hl7.org/fhir/sid/us-ssn"
#: HL7 table 0063 (relationship) -> FHIR subscriber-relationship
RELATIONSHIPS = {"SEL": "self", "SPO": "spouse", "DOM": "common", "CHD": "child",
                 "FCH": "child", "SCH": "child", "NCH": "child", "GCH": "other",
                 "PAR": "parent", "MTH": "parent", "FTH": "parent", "EMC": "other",
                 "EME": "other", "EMR": "other", "OTH": "other", "UNK": "other"}


def insurance_groups(msg: Message) -> list[tuple[Segment, Segment | None]]:
    """Each IN1 with the IN2 that follows it (before the next IN1), in message order."""
    groups: list[tuple[Segment, Segment | None]] = []
    for seg in msg:
        if seg.name == "IN1":
            groups.append((seg, None))
        elif seg.name == "IN2" and groups and groups[-1][1] is None:
            groups[-1] = (groups[-1][0], seg)
    return groups


def to_coverages(msg: Message, sender: str, config: SenderConfig, patient: dict[str, Any]
                 ) -> list[dict[str, Any]]:
    """Coverage, payer Organization and RelatedPerson resources for every IN1 (Coverages in
    IN1 order; supporting resources after the Coverage that names them)."""
    resources: list[dict[str, Any]] = []
    for in1, in2 in insurance_groups(msg):
        if in1.get(3) or in1.get(4):  # without a payer there is no coverage to name
            resources += _coverage(in1, in2, sender, config, patient)
    return resources


def _coverage(in1: Segment, in2: Segment | None, sender: str, config: SenderConfig,
              patient: dict[str, Any]) -> list[dict[str, Any]]:
    beneficiary = {"reference": f"Patient/{patient['id']}"}
    payer = _payer(in1, sender, config)
    member = in1.get(49) or in1.get(36)
    plan = in1.get(2)
    # without a member id the Coverage is the patient's own: effects.coverage_ids gives it the
    # patient's id as stored (the id here may be a new patient's before it is matched)
    key = f"member:{member}" if member else f"plan:{plan}"
    coverage: dict[str, Any] = {
        "resourceType": "Coverage",
        "id": stable_id("Coverage", sender, payer["id"], key),
        "status": "active", "beneficiary": beneficiary,
        "payor": [_payor_reference(payer)]}
    identifiers = _identifiers(in1, in2, member, sender, config)
    if identifiers:
        coverage["identifier"] = identifiers
    if member:
        coverage["subscriberId"] = member
    kind = to_codeable(in1, 15)
    if kind:
        coverage["type"] = kind
    period = {k: v for k, v in (("start", to_date(in1.get(12))),
                                ("end", to_date(in1.get(13)))) if v}
    if period:
        coverage["period"] = period
    if in1.get(8):
        group: dict[str, Any] = {"type": {"coding": [{"system": COVERAGE_CLASS,
                                                      "code": "group"}]},
                                 "value": in1.get(8)}
        if in1.get(9):
            group["name"] = in1.get(9)
        coverage["class"] = [group]
    if in1.get(22).isdigit() and int(in1.get(22)) > 0:
        coverage["order"] = int(in1.get(22))
    resources = [coverage, payer]
    relationship = _relationship(in1)
    if relationship is not None:
        coverage["relationship"] = relationship
    code = relationship["coding"][0]["code"] if relationship else ""
    if code == "self":
        coverage["subscriber"] = beneficiary
    elif in1.get(16, 1) or in1.get(16, 2):
        person = _related_person(in1, in2, sender, config, beneficiary, coverage["id"])
        coverage["subscriber"] = {"reference": f"RelatedPerson/{person['id']}"}
        resources.append(person)
    return resources


_PAYERS = Memo()


def _payer(in1: Segment, sender: str, config: SenderConfig) -> dict[str, Any]:
    key = (sender, in1.d, *in1.fields[3:8], *sorted(config.authorities.items()))
    found: dict[str, Any] = _PAYERS.get(key, lambda: _new_payer(in1, sender, config))
    return found


def _new_payer(in1: Segment, sender: str, config: SenderConfig) -> dict[str, Any]:
    identifier = to_identifier(in1, 3, 0, config.authorities, sender)
    name = in1.get(4)
    key = f"id:{identifier['system']}|{identifier['value']}" if identifier else f"name:{name}"
    payer: dict[str, Any] = {"resourceType": "Organization",
                             "id": stable_id("Organization", sender, key),
                             "type": [{"coding": [{
                                 "system": "http://terminology.hl7.org/CodeSystem/"
                                           "organization-type", "code": "pay",
                                 "display": "Payer"}]}]}
    if identifier:
        payer["identifier"] = [identifier]
    if name:
        payer["name"] = name
    address = to_address(in1, 5)
    if address:
        payer["address"] = [address]
    telecom = [t for r in range(len(in1.repetitions(7))) if (t := to_telecom(in1, 7, r, "work"))]
    if telecom:
        payer["telecom"] = telecom
    return payer


def _payor_reference(payer: dict[str, Any]) -> dict[str, Any]:
    reference: dict[str, Any] = {"reference": f"Organization/{payer['id']}"}
    if payer.get("identifier"):
        reference["identifier"] = payer["identifier"][0]
    if payer.get("name"):
        reference["display"] = payer["name"]
    return reference


def _identifiers(in1: Segment, in2: Segment | None, member: str, sender: str,
                 config: SenderConfig) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    plan = in1.get(2)
    if plan:  # a plan code of a local table (L, 99zzz) has no system we could name
        system = code_system(in1.get(2, 3))
        found.append({"system": system, "value": plan}
                     if system and not system.startswith("urn:refloop:") else {"value": plan})
    if member:
        insured = to_identifier(in1, 49, 0, config.authorities, sender)
        found.append(_typed(insured or {"value": member}, "MB", "Member Number"))
    if in2 is not None:
        patient_member = to_identifier(in2, 61, 0, config.authorities, sender)
        if patient_member and all(i["value"] != patient_member["value"] for i in found):
            found.append(_typed(patient_member, "MB", "Member Number"))
        for number, code, display in ((6, "MC", "Patient's Medicare number"),
                                      (8, "MA", "Patient Medicaid number")):
            if in2.get(number):
                found.append(_typed({"value": in2.get(number)}, code, display))
    return found


def _typed(identifier: dict[str, Any], code: str, display: str) -> dict[str, Any]:
    return {**identifier, "type": {"coding": [{"system": V2_0203, "code": code,
                                               "display": display}]}}


def _relationship(in1: Segment) -> dict[str, Any] | None:
    code = in1.get(17).upper()
    if not code:
        return None
    codings = [{"system": RELATIONSHIP, "code": RELATIONSHIPS.get(code, "other")}]
    original = to_codeable(in1, 17)
    if original:
        codings += [{**c, "system": "http://terminology.hl7.org/CodeSystem/v2-0063"}
                    if not c.get("system") or "0063" in c["system"] else c
                    for c in original.get("coding", [])]
    return {"coding": codings}


def _related_person(in1: Segment, in2: Segment | None, sender: str, config: SenderConfig,
                    beneficiary: dict[str, Any], coverage_id: str) -> dict[str, Any]:
    person: dict[str, Any] = {"resourceType": "RelatedPerson",
                              "id": stable_id("RelatedPerson", sender, coverage_id),
                              "patient": beneficiary}
    name = to_human_name(in1, 16)
    if name:
        person["name"] = [name]
    original = (_relationship(in1) or {"coding": []})["coding"][1:]
    if original:  # the v2 table 0063 code: RelatedPerson.relationship is v3 RoleCode
        person["relationship"] = [{"coding": original}]
    birth = to_date(in1.get(18))
    if birth:
        person["birthDate"] = birth
    address = to_address(in1, 19)
    if address:
        person["address"] = [address]
    if in2 is not None:
        if in2.get(2):
            person["identifier"] = [{"type": {"coding": [{"system": V2_0203, "code": "SS"}]},
                                     "system": US_SSN, "value": in2.get(2)}]
        telecom = [t for r in range(len(in2.repetitions(63)))
                   if (t := to_telecom(in2, 63, r, "home"))]
        if telecom:
            person["telecom"] = telecom
    return person
