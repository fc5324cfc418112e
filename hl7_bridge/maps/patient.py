"""PID -> Patient (IG PID[Patient]); MRG -> the identifiers a merge retires."""

from __future__ import annotations

from typing import Any

from hl7_bridge.config import SenderConfig
from hl7_bridge.datatypes import (
    stable_id,
    to_address,
    to_date,
    to_datetime,
    to_human_name,
    to_identifier,
    to_telecom,
)
from hl7_bridge.ids import recent_id
from hl7_bridge.message import Segment

GENDER = {"M": "male", "F": "female", "O": "other", "A": "other", "U": "unknown",
          "N": "unknown"}
BIRTH_TIME = "http://hl7.org/fhir/StructureDefinition/patient-birthTime"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
US_SSN = "http://hl7.org/fhir/sid/us-ssn"


def patient_identifiers(pid: Segment, sender: str, config: SenderConfig
                        ) -> list[dict[str, Any]]:
    """PID-3 (all repetitions), then PID-2 and PID-4 (older versions), then PID-19 SSN (IG:
    type SS, system us-ssn), without duplicates."""
    found: list[dict[str, Any]] = []
    for number in (3, 2, 4):
        for rep in range(len(pid.repetitions(number))):
            identifier = to_identifier(pid, number, rep, config.authorities, sender)
            if identifier and all((i["system"], i["value"]) !=
                                  (identifier["system"], identifier["value"]) for i in found):
                found.append(identifier)
    ssn = pid.get(19).strip()
    if ssn and all(i["value"] != ssn for i in found):
        found.append({"type": {"coding": [{"system": V2_0203, "code": "SS"}]},
                      "system": US_SSN, "value": ssn})
    return found


def mrg_identifiers(mrg: Segment, sender: str, config: SenderConfig) -> list[dict[str, Any]]:
    """MRG-1 prior patient identifier list (plus MRG-4 prior patient id of old versions)."""
    found: list[dict[str, Any]] = []
    for number in (1, 4):
        for rep in range(len(mrg.repetitions(number))):
            identifier = to_identifier(mrg, number, rep, config.authorities, sender)
            if identifier:
                found.append(identifier)
    return found


def to_patient(pid: Segment, sender: str, config: SenderConfig) -> dict[str, Any]:
    identifiers = patient_identifiers(pid, sender, config)
    key = f"{identifiers[0]['system']}|{identifiers[0]['value']}" if identifiers else \
        f"{sender}|{pid.raw(5)}|{pid.raw(7)}"
    # identified: found again by its identifiers (ids.py); otherwise by this key alone
    new_id = recent_id("Patient", key) if identifiers else stable_id("Patient", key)
    patient: dict[str, Any] = {"resourceType": "Patient", "id": new_id}
    if identifiers:
        patient["identifier"] = identifiers
    names = [n for r in range(len(pid.repetitions(5))) if (n := to_human_name(pid, 5, r))]
    if names:
        patient["name"] = names
    telecom = [t for r in range(len(pid.repetitions(13)))
               if (t := to_telecom(pid, 13, r, "home"))]
    telecom += [t for r in range(len(pid.repetitions(14)))
                if (t := to_telecom(pid, 14, r, "work"))]
    if telecom:
        patient["telecom"] = telecom
    gender = GENDER.get(pid.get(8).upper())
    if gender:
        patient["gender"] = gender
    birth = pid.get(7)
    birth_date = to_date(birth)
    if birth_date:
        patient["birthDate"] = birth_date
        if len(birth.split("+")[0].split("-")[0]) > 8:
            moment = to_datetime(birth, config.time_zone)
            if moment:
                patient["_birthDate"] = {"extension": [{"url": BIRTH_TIME,
                                                        "valueDateTime": moment}]}
    addresses = [a for r in range(len(pid.repetitions(11))) if (a := to_address(pid, 11, r))]
    if addresses:
        patient["address"] = addresses
    death = to_datetime(pid.get(29), config.time_zone)
    if death:
        patient["deceasedDateTime"] = death
    elif pid.get(30).upper() in ("Y", "N"):
        patient["deceasedBoolean"] = pid.get(30).upper() == "Y"
    return patient
