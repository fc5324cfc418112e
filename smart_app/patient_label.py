"""What the worklist shows of a row's patient: name, age and administrative sex from the stored
Patient resource, or the patient reference when we hold no Patient for it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

SEX = {"female": "F", "male": "M", "other": "O"}


@dataclass(frozen=True)
class PatientLabel:
    name: str          # the patient's name, or the reference when unknown
    known: bool        # a stored Patient resource with a name was found
    age: int | None = None
    sex: str = ""      # F | M | O | "" (unknown or not given)

    @property
    def details(self) -> str:
        """"54 y · F", "54 y", "F" or ""."""
        parts = [f"{self.age} y" if self.age is not None else "", self.sex]
        return " · ".join(p for p in parts if p)


def to_patient_label(reference: str, patient: dict[str, Any] | None,
                     today: date) -> PatientLabel:
    name = first_name_text(patient)
    if patient is None or not name:
        return PatientLabel(name=reference, known=False)
    return PatientLabel(name=name, known=True, age=age_on(patient.get("birthDate"), today),
                        sex=SEX.get(str(patient.get("gender", "")), ""))


def first_name_text(patient: dict[str, Any] | None) -> str:
    """The official (else the first usable) HumanName as text."""
    names = [n for n in (patient or {}).get("name") or [] if isinstance(n, dict)]
    names.sort(key=lambda n: n.get("use") != "official")
    for name in names:
        given = [str(g) for g in name.get("given") or []]
        text = name.get("text") or " ".join(p for p in [*given, str(name.get("family") or "")]
                                            if p)
        if text:
            return str(text)
    return ""


def display_name(resource: dict[str, Any] | None) -> str:
    """What a person or organisation is called: its HumanName (the official one first), an
    Organization's name, or the practitioner (and organization) a PractitionerRole names."""
    if not resource:
        return ""
    if isinstance(resource.get("name"), str):
        return str(resource["name"])
    found = first_name_text(resource)
    if found or resource.get("resourceType") != "PractitionerRole":
        return found
    person = str((resource.get("practitioner") or {}).get("display") or "")
    place = str((resource.get("organization") or {}).get("display") or "")
    return f"{person} ({place})" if person and place else person or place


def age_on(birth_date: Any, today: date) -> int | None:
    """Whole years from a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD); None when absent or bad."""
    if not isinstance(birth_date, str) or len(birth_date) < 4:
        return None
    try:
        parts = [int(p) for p in birth_date[:10].split("-")]
        born = date(parts[0], parts[1] if len(parts) > 1 else 1, parts[2] if len(parts) > 2 else 1)
    except (ValueError, IndexError):
        return None
    if born > today:
        return None
    years = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    return max(0, years)


def labels_for(rows: list[Any], patients: dict[str, dict[str, Any]],
               now: datetime) -> dict[str, PatientLabel]:
    """A label per worklist row (by referral id)."""
    today = now.date()
    return {row.id: to_patient_label(row.patient, patients.get(row.id), today) for row in rows}
