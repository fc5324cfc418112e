"""The pre-flight check on defects derived from the official PAS examples, one class at a time:
each broken copy must fail at the right path with the right rule, and nothing else may fail."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from pas_client.conformance import Finding, check_bundle

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "pas"
REFERRAL = "Bundle-ReferralAuthorizationBundleExample.json"
HOMECARE = "Bundle-HomecareAuthorizationBundleExample.json"
MEDICAL = "Bundle-MedicalServicesAuthorizationBundleExample.json"
Bundle = dict[str, Any]


@cache
def _example(version: str, name: str) -> str:
    return (FIXTURES / f"v{version}" / name).read_text("utf-8")


def example(name: str = REFERRAL, version: str = "2.2.1") -> Bundle:
    data: Bundle = json.loads(_example(version, name))
    return data


def entry(bundle: Bundle, kind: str) -> tuple[int, dict[str, Any]]:
    for i, item in enumerate(bundle["entry"]):
        if item["resource"]["resourceType"] == kind:
            return i, item["resource"]
    raise AssertionError(kind)


def claim(bundle: Bundle) -> dict[str, Any]:
    return entry(bundle, "Claim")[1]


def errors(findings: list[Finding]) -> set[tuple[str, str]]:
    return {(f.path, f.rule) for f in findings if f.severity == "error"}


def at(bundle: Bundle, kind: str, rest: str) -> str:
    return f"Bundle.entry[{entry(bundle, kind)[0]}].resource.{rest}"


# --- each case: (the mutation, the expected errors as (path, rule) given the bundle) --------------
Case = tuple[str, Callable[[Bundle], None], Callable[[Bundle], set[tuple[str, str]]]]


def set_in(kind: str, key: str, value: Any) -> Callable[[Bundle], None]:
    def mutate(bundle: Bundle) -> None:
        entry(bundle, kind)[1][key] = value
    return mutate


def datatype_cases() -> list[Case]:
    def period_backwards(b: Bundle) -> None:
        claim(b)["billablePeriod"] = {"start": "2024-03-01", "end": "2024-02-01"}

    def identifier_use(b: Bundle) -> None:
        entry(b, "Patient")[1]["identifier"][0]["use"] = "offical"

    def coding_not_array(b: Bundle) -> None:
        claim(b)["type"]["coding"] = claim(b)["type"]["coding"][0]

    def coding_unknown_key(b: Bundle) -> None:
        claim(b)["priority"]["coding"][0]["sytem"] = "x"

    def reference_number(b: Bundle) -> None:
        claim(b)["insurance"][0]["coverage"] = {"reference": 42}

    def quantity_code_without_system(b: Bundle) -> None:
        del entry(b, "ServiceRequest")[1]["quantityQuantity"]["system"]

    def telecom_system(b: Bundle) -> None:
        entry(b, "PractitionerRole")[1]["telecom"][0]["system"] = "telephone"

    return [
        ("Period.start after end", period_backwards,
         lambda b: {(at(b, "Claim", "billablePeriod"), "invariant:per-1")}),
        ("Identifier.use not in identifier-use", identifier_use,
         lambda b: {(at(b, "Patient", "identifier[0].use"), "binding")}),
        ("CodeableConcept.coding not an array", coding_not_array,
         lambda b: {(at(b, "Claim", "type.coding"), "type")}),
        ("Coding with an unknown element", coding_unknown_key,
         lambda b: {(at(b, "Claim", "priority.coding[0].sytem"), "unknown-element")}),
        ("Reference.reference a number", reference_number,
         lambda b: {(at(b, "Claim", "insurance[0].coverage.reference"), "type")}),
        ("Quantity.code without a system", quantity_code_without_system,
         lambda b: {(at(b, "ServiceRequest", "quantityQuantity"), "invariant:qty-3")}),
        ("ContactPoint.system not in contact-point-system", telecom_system,
         lambda b: {(at(b, "PractitionerRole", "telecom[0].system"), "binding")}),
    ]


def binding_cases() -> list[Case]:
    def snomed_product(b: Bundle) -> None:
        claim(b)["item"][0]["productOrService"] = {"coding": [
            {"system": "http://snomed.info/sct", "code": "306235009"}]}

    def icd10_who(b: Bundle) -> None:
        claim(b)["diagnosis"][0]["diagnosisCodeableConcept"]["coding"][0]["system"] = \
            "http://hl7.org/fhir/sid/icd-10"

    def x12_category_as_snomed(b: Bundle) -> None:
        claim(b)["item"][0]["category"] = {"coding": [
            {"system": "http://snomed.info/sct", "code": "3"}]}

    def gender(b: Bundle) -> None:
        entry(b, "Patient")[1]["gender"] = "M"

    def text_only_product(b: Bundle) -> None:
        claim(b)["item"][0]["productOrService"] = {"text": "Consultation"}

    def text_only_type(b: Bundle) -> None:
        claim(b)["type"] = {"text": "professional"}

    def text_only_category(b: Bundle) -> None:
        claim(b)["item"][0]["category"] = {"text": "Consultation"}

    def coverage_status(b: Bundle) -> None:
        entry(b, "Coverage")[1]["status"] = "current"

    return [
        ("SNOMED where CPT/HCPCS is wanted", snomed_product,
         lambda b: {(at(b, "Claim", "item[0].productOrService"), "binding")}),
        ("icd-10 where ICD-10-CM is required", icd10_who,
         lambda b: {(at(b, "Claim", "diagnosis[0].diagnosisCodeableConcept"), "binding")}),
        ("SNOMED where the X12 service type is required", x12_category_as_snomed,
         lambda b: {(at(b, "Claim", "item[0].category"), "binding")}),
        ("administrative gender M", gender,
         lambda b: {(at(b, "Patient", "gender"), "binding")}),
        ("Coverage.status not in fm-status", coverage_status,
         lambda b: {(at(b, "Coverage", "status"), "binding"),
                    (at(b, "Coverage", "status"), "pattern")}),
        ("text-only productOrService", text_only_product,
         lambda b: {(at(b, "Claim", "item[0].productOrService"), "binding")}),
        ("text-only Claim.type", text_only_type,
         lambda b: {(at(b, "Claim", "type"), "binding")}),
        ("text-only item.category", text_only_category,
         lambda b: {(at(b, "Claim", "item[0].category"), "binding")}),
    ]


def reference_cases() -> list[Case]:
    def patient_is_practitioner(b: Bundle) -> None:
        claim(b)["patient"] = {"reference": "Practitioner/ReferralPractitionerExample"}

    def insurer_is_patient(b: Bundle) -> None:
        claim(b)["insurer"] = {"reference": "Patient/SubscriberExample"}

    def beneficiary_is_organization(b: Bundle) -> None:
        entry(b, "Coverage")[1]["beneficiary"] = {"reference": "Organization/InsurerExample"}

    def coverage_is_service_request(b: Bundle) -> None:
        claim(b)["insurance"][0]["coverage"] = {
            "reference": "ServiceRequest/ReferralRequestExample"}

    def missing_contained(b: Bundle) -> None:
        claim(b)["referral"] = {"reference": "#referral"}

    def contained_of_wrong_type(b: Bundle) -> None:
        claim(b)["contained"] = [{"resourceType": "Location", "id": "ref1",
                                  "name": "Somewhere"}]
        claim(b)["referral"] = {"reference": "#ref1"}

    def contained_unreferenced(b: Bundle) -> None:
        claim(b)["contained"] = [{"resourceType": "Location", "id": "loose",
                                  "name": "Somewhere"}]

    return [
        ("Claim.patient pointing at a Practitioner", patient_is_practitioner,
         lambda b: {(at(b, "Claim", "patient"), "reference-type")}),
        ("Claim.insurer pointing at a Patient", insurer_is_patient,
         lambda b: {(at(b, "Claim", "insurer"), "reference-type")}),
        ("Coverage.beneficiary pointing at an Organization", beneficiary_is_organization,
         lambda b: {(at(b, "Coverage", "beneficiary"), "reference-type")}),
        ("Claim.insurance.coverage pointing at a ServiceRequest", coverage_is_service_request,
         lambda b: {(at(b, "Claim", "insurance[0].coverage"), "reference-type")}),
        ("local reference to a contained resource that does not exist", missing_contained,
         lambda b: {(at(b, "Claim", "referral"), "reference-contained")}),
        ("local reference to a contained resource of the wrong type", contained_of_wrong_type,
         lambda b: {(at(b, "Claim", "referral"), "reference-type")}),
        ("contained resource nothing references", contained_unreferenced,
         lambda b: {(at(b, "Claim", "contained[0]"), "invariant:dom-3")}),
    ]


def invariant_cases() -> list[Case]:
    def duplicate_item(b: Bundle) -> None:
        items = claim(b)["item"]
        items.append(copy.deepcopy(items[0]))

    def duplicate_information(b: Bundle) -> None:
        info = claim(b)["supportingInfo"]
        info.append(copy.deepcopy(info[0]))
        info[1]["valueReference"] = info[0]["valueReference"]

    def diagnosis_nowhere(b: Bundle) -> None:
        claim(b)["item"][0]["diagnosisSequence"] = [1, 7]

    def care_team_nowhere(b: Bundle) -> None:
        claim(b)["item"][0]["careTeamSequence"] = [9]

    def information_nowhere(b: Bundle) -> None:
        claim(b)["item"][0]["informationSequence"] = [4]

    def immediate_appeal_without_level(b: Bundle) -> None:
        c = claim(b)
        c["extension"] = [e for e in c["extension"] if not e["url"].endswith("levelOfServiceCode")]
        for extension in c["item"][0]["extension"]:
            if extension["url"].endswith("certificationType"):
                extension["valueCodeableConcept"]["coding"][0]["code"] = "1"

    def self_without_subscriber(b: Bundle) -> None:
        coverage = entry(b, "Coverage")[1]
        coverage["relationship"]["coding"] = [{"system": "https://codesystem.x12.org/005010/1069",
                                               "code": "01"}]

    return [
        ("duplicate item sequence", duplicate_item,
         lambda b: {(at(b, "Claim", "item[1].sequence"), "consistency:unique-sequence")}),
        ("duplicate supportingInfo sequence", duplicate_information,
         lambda b: {(at(b, "Claim", "supportingInfo[1].sequence"),
                     "consistency:unique-sequence")}),
        ("diagnosisSequence pointing nowhere", diagnosis_nowhere,
         lambda b: {(at(b, "Claim", "item[0].diagnosisSequence[1]"),
                     "consistency:sequence-reference")}),
        ("careTeamSequence pointing nowhere", care_team_nowhere,
         lambda b: {(at(b, "Claim", "item[0].careTeamSequence[0]"),
                     "consistency:sequence-reference")}),
        ("informationSequence pointing nowhere", information_nowhere,
         lambda b: {(at(b, "Claim", "item[0].informationSequence[0]"),
                     "consistency:sequence-reference")}),
        ("immediate appeal without a level of service (IG invariant, fixed)",
         immediate_appeal_without_level,
         lambda b: {(at(b, "Claim", "item[0]"), "invariant:ImmediateLevelOfCare")}),
        ("not the subscriber's own coverage and no subscriber", self_without_subscriber,
         lambda b: {(at(b, "Coverage", ""), "invariant:self-beneficiary")}),
    ]


def date_cases() -> list[Case]:
    def timestamp_without_zone(b: Bundle) -> None:
        b["timestamp"] = "2024-01-05T10:00:00"

    def created_hour_25(b: Bundle) -> None:
        claim(b)["created"] = "2024-01-05T25:00:00Z"

    return [
        ("2024-02-30 birth date", set_in("Patient", "birthDate", "2024-02-30"),
         lambda b: {(at(b, "Patient", "birthDate"), "type")}),
        ("month 13", set_in("Patient", "birthDate", "2023-13-01"),
         lambda b: {(at(b, "Patient", "birthDate"), "type")}),
        ("instant without a time zone", timestamp_without_zone,
         lambda b: {("Bundle.timestamp", "type")}),
        ("dateTime at hour 25", created_hour_25,
         lambda b: {(at(b, "Claim", "created"), "type")}),
        ("29 February of a common year", set_in("Patient", "birthDate", "2023-02-29"),
         lambda b: {(at(b, "Patient", "birthDate"), "type")}),
    ]


def resource_type_cases() -> list[Case]:
    def misspell(kind: str, wrong: str) -> Callable[[Bundle], None]:
        def mutate(b: Bundle) -> None:
            entry(b, kind)[1]["resourceType"] = wrong
        return mutate

    def expected(kind: str) -> Callable[[Bundle], set[tuple[str, str]]]:
        def found(b: Bundle) -> set[tuple[str, str]]:
            index = next(i for i, e in enumerate(example()["entry"])
                         if e["resource"]["resourceType"] == kind)
            return {(f"Bundle.entry[{index}].resource.resourceType", "resource-type")}
        return found

    return [
        ("Patinet", misspell("Patient", "Patinet"), expected("Patient")),
        ("Organisation", misspell("Coverage", "Coverge"), expected("Coverage")),
        ("lower-case practitioner", misspell("Practitioner", "practitioner"),
         expected("Practitioner")),
    ]


CASES = [pytest.param(mutate, want, id=name) for group in (
    datatype_cases, binding_cases, reference_cases, invariant_cases, date_cases,
    resource_type_cases) for name, mutate, want in group()]


@pytest.mark.parametrize(("mutate", "want"), CASES)
def test_defect_fails_at_its_path(mutate: Callable[[Bundle], None],
                                  want: Callable[[Bundle], set[tuple[str, str]]]) -> None:
    bundle = example()
    expected = {(p.rstrip("."), r) for p, r in want(bundle)}
    mutate(bundle)
    assert errors(check_bundle(bundle)) == expected


def test_the_defect_classes_have_three_cases_each() -> None:
    for group in (datatype_cases, binding_cases, reference_cases, invariant_cases, date_cases,
                  resource_type_cases):
        assert len(group()) >= 3, group.__name__


@pytest.mark.parametrize("name", [HOMECARE, MEDICAL])
def test_defects_in_other_examples(name: str) -> None:
    bundle = example(name)
    c = claim(bundle)
    c["item"][0]["productOrService"] = {"coding": [{"system": "http://snomed.info/sct",
                                                    "code": "225358003"}]}
    c["type"] = {"text": "professional"}
    entry(bundle, "Patient")[1]["birthDate"] = "1970-02-30"
    paths = {p for p, _ in errors(check_bundle(bundle))}
    assert paths == {at(bundle, "Claim", "item[0].productOrService"),
                     at(bundle, "Claim", "type"), at(bundle, "Patient", "birthDate")}


def test_2_0_1_checks_the_same_classes() -> None:
    bundle = example(version="2.0.1")
    claim(bundle)["patient"] = {"reference": "Practitioner/ReferralPractitionerExample"}
    entry(bundle, "Patient")[1]["gender"] = "M"
    assert errors(check_bundle(bundle, "2.0.1")) == {
        (at(bundle, "Claim", "patient"), "reference-type"),
        (at(bundle, "Patient", "gender"), "binding")}


def test_misspelt_resource_type_suggests_the_right_one() -> None:
    bundle = example()
    entry(bundle, "Patient")[1]["resourceType"] = "Patinet"
    found = [f for f in check_bundle(bundle) if f.rule == "resource-type"]
    assert len(found) == 1 and "did you mean 'Patient'" in found[0].message


def test_wrong_system_message_names_the_allowed_systems() -> None:
    bundle = example()
    claim(bundle)["item"][0]["productOrService"] = {"coding": [
        {"system": "http://snomed.info/sct", "code": "306235009"}]}
    (finding,) = [f for f in check_bundle(bundle) if f.severity == "error"]
    assert "http://snomed.info/sct" in finding.message
    assert "http://www.ama-assn.org/go/cpt" in finding.message
    assert finding.element == "Claim.item.productOrService"


def test_immediate_appeal_with_the_claim_level_of_service_passes() -> None:
    """ImmediateLevelOfCare as corrected: the level of service on the Claim satisfies it."""
    bundle = example()
    for extension in claim(bundle)["item"][0]["extension"]:
        if extension["url"].endswith("certificationType"):
            extension["valueCodeableConcept"]["coding"][0]["code"] = "1"
    assert errors(check_bundle(bundle)) == set()
