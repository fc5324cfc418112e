"""What the patient pages and messages need to know about the patient, read from the Patient
resource the detection adapters stored (the referral's origin server first): date of birth,
name, language (Patient.communication) and time zone (the `tz-code` extension)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from referrals.model import Referral
from referrals.store.schema import resources

TZ_EXTENSION = "http://hl7.org/fhir/StructureDefinition/tz-code"
LANGUAGES = ("en", "es")


@dataclass(frozen=True)
class PatientFacts:
    reference: str
    birth_date: str = ""
    display: str = ""
    language: str = "en"
    time_zone: str = ""


def origin_server(referral: Referral) -> str:
    """Where the referral came from, as the resources table names servers."""
    kind, _, rest = referral.source_key.partition("|")
    if kind == "fhir":
        return rest.rsplit("|", 1)[0]
    if kind == "hl7":
        return "hl7:" + rest.split("|", 1)[0]
    return kind


def load_patient(conn: Connection, referral: Referral) -> PatientFacts:
    rtype, _, rid = referral.patient.partition("/")
    rows = conn.execute(sa.select(resources.c.server, resources.c.body).where(
        resources.c.resource_type == (rtype or "Patient"), resources.c.resource_id == rid,
        resources.c.deleted.is_(False))).all()
    if not rows:
        return PatientFacts(referral.patient)
    origin = origin_server(referral)
    body = next((r.body for r in rows if r.server == origin), rows[0].body) or {}
    return to_facts(referral.patient, body)


def to_facts(reference: str, patient: dict[str, Any]) -> PatientFacts:
    return PatientFacts(reference, str(patient.get("birthDate") or ""), _name(patient),
                        language_of(patient), _zone(patient))


def language_of(patient: dict[str, Any]) -> str:
    """The preferred communication language we have pages for ("en" when none)."""
    entries = patient.get("communication") or []
    ordered = sorted(entries, key=lambda c: not c.get("preferred"))
    for entry in ordered:
        language = entry.get("language") or {}
        codes = [c.get("code", "") for c in language.get("coding") or []]
        codes.append(language.get("text", ""))
        for code in codes:
            short = str(code).lower()[:2]
            if short in LANGUAGES:
                return short
            if str(code).lower().startswith("span"):
                return "es"
    return "en"


def _name(patient: dict[str, Any]) -> str:
    names = patient.get("name") or []
    if not names:
        return ""
    name = next((n for n in names if n.get("use") == "official"), names[0])
    return " ".join([*name.get("given", []), name.get("family", "")]).strip()


def _zone(patient: dict[str, Any]) -> str:
    for extension in patient.get("extension") or []:
        if extension.get("url") == TZ_EXTENSION and extension.get("valueCode"):
            return str(extension["valueCode"])
    return ""
