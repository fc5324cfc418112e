"""The worklist's patient column: origin of a referral's resources from its source key, the
patient id of a reference, name/age/sex labels and their fallback, the AuditEvent of a page."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from referrals.worklist import patient_id, patient_server
from smart_app.audit import build_audit_event
from smart_app.context import LaunchContext
from smart_app.patient_label import age_on, labels_for, to_patient_label
from smart_app.sessions import Session

TODAY = date(2026, 6, 15)


@pytest.mark.parametrize(("source_key", "server"), [
    ("fhir|https://ehr.example/fhir|ServiceRequest/1", "https://ehr.example/fhir"),
    ("demo|ServiceRequest/cardio-1", "demo"),
    ("hl7|LABSYS|ORD-77", "hl7:LABSYS"),
    ("t|ServiceRequest/1", None), ("bench|5", None), ("", None), ("fhir||x", None),
])
def test_patient_server_follows_the_source_key(source_key: str, server: str | None) -> None:
    assert patient_server(source_key) == server


@pytest.mark.parametrize(("reference", "pid"), [
    ("Patient/123", "123"), ("https://ehr.example/fhir/Patient/abc", "abc"),
    ("Patient/9/_history/2", "9"), ("Group/1", None), ("Patient/", None), ("", None),
])
def test_patient_id_of_a_reference(reference: str, pid: str | None) -> None:
    assert patient_id(reference) == pid


def test_label_has_name_age_and_sex() -> None:
    label = to_patient_label("Patient/1", {
        "name": [{"use": "nickname", "text": "Gigi"},
                 {"use": "official", "given": ["Grace", "B."], "family": "Hopper"}],
        "birthDate": "1960-06-16", "gender": "female"}, TODAY)
    assert (label.name, label.known, label.age, label.sex) == ("Grace B. Hopper", True, 65, "F")
    assert label.details == "65 y · F"


def test_unknown_or_nameless_patient_falls_back_to_the_reference() -> None:
    for resource in (None, {"resourceType": "Patient", "gender": "male"}, {"name": [{}]}):
        label = to_patient_label("Patient/7", resource, TODAY)
        assert (label.name, label.known, label.details) == ("Patient/7", False, "")


@pytest.mark.parametrize(("birth", "age"), [
    ("1960-06-15", 66), ("1960-06-16", 65), ("1960-06", 66), ("1960", 66),
    ("2030-01-01", None), ("sixty", None), (None, None), ("", None), ("1960-13-01", None),
])
def test_age_from_fhir_dates(birth: object, age: int | None) -> None:
    assert age_on(birth, TODAY) == age


def test_sex_shows_only_known_codes() -> None:
    base = {"name": [{"text": "A B"}]}
    assert to_patient_label("P", {**base, "gender": "unknown"}, TODAY).details == ""
    assert to_patient_label("P", {**base, "gender": "other"}, TODAY).details == "O"


def test_labels_for_rows_by_referral_id() -> None:
    class Row:
        def __init__(self, rid: str, patient: str) -> None:
            self.id, self.patient = rid, patient

    labels = labels_for([Row("r1", "Patient/1"), Row("r2", "Patient/2")],
                        {"r1": {"name": [{"text": "Ada L"}]}}, datetime(2026, 1, 1, tzinfo=UTC))
    assert labels["r1"].name == "Ada L" and labels["r2"].name == "Patient/2"


def test_audit_event_of_a_page_names_each_patient_once() -> None:
    session = Session(id="abcdefgh123", tenant="t", iss="https://ehr.example/fhir",
                      context=LaunchContext(user="Practitioner/1"), csrf_token="x",
                      token_expires_at=None, version=1, sealed_tokens="")
    event = build_audit_event(session, interaction="search", patient="Patient/1", entities=[],
                              query="sort=due",
                              patients=["Patient/1", "Patient/2", "Patient/2", "Patient/3"])
    patients = [e["what"]["reference"] for e in event["entity"]
                if e.get("role", {}).get("code") == "1"]
    assert patients == ["Patient/1", "Patient/2", "Patient/3"]
