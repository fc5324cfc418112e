"""Interpreting PAS responses: every official response example gives the decision its scenario
documents, in both versions; decisions come from reviewAction only."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pas_client.reply import read_reply
from pas_client.response import (
    ResponseError,
    from_claim_response,
    names_patient,
    parse_inquire_reply,
    parse_response_bundle,
    patient_mismatch,
)

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "pas"


def load(version: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"v{version}" / name).read_text("utf-8"))
    return data


# (version, file, overall, [(sequence, code, auth number)]) as the IG documents each scenario
BUNDLES = [
    ("2.2.1", "Bundle-ReferralAuthorizationResponseBundleExample.json", "approved",
     [(1, "A1", "AUTH0001")]),
    ("2.2.1", "Bundle-ReferralPendingAuthorizationResponseBundleExample.json", "pending",
     [(1, "A4", "")]),
    ("2.2.1", "Bundle-RejectionResponseBundleExample.json", "denied", [(1, "A3", "")]),
    ("2.2.1", "Bundle-ErrorResponseBundleExample.json", "error", []),
    ("2.0.1", "Bundle-ReferralAuthorizationResponseBundleExample.json", "approved",
     [(1, "A1", "AUTH0001")]),
    # 2.0.1's "error" example is an approval (IG defect FHIR-46516): we read what it says
    ("2.0.1", "Bundle-ErrorResponseBundleExample.json", "approved", [(1, "A1", "AUTH0001")]),
]
CLAIM_RESPONSES = [
    ("2.2.1", "ClaimResponse-PractitionerRequestorPendingResponseExample.json", "pending"),
    ("2.2.1", "ClaimResponse-RejectionResponseExample.json", "denied"),
    ("2.2.1", "ClaimResponse-PractitionerRequestorResponseExample.json", "approved"),
    ("2.2.1", "ClaimResponse-PractitionerRequestorAdditionalContentResponseExample.json",
     "approved"),
    ("2.2.1", "ClaimResponse-ErrorResponseExample.json", "error"),
    ("2.0.1", "ClaimResponse-ErrorResponseExample.json", "error"),
    ("2.0.1", "ClaimResponse-ReferralAuthorizationResponseExample.json", "approved"),
    ("2.0.1", "ClaimResponse-PractitionerRequestorResponseExample.json", "approved"),
]


@pytest.mark.parametrize(("version", "name", "overall", "items"), BUNDLES)
def test_official_response_bundles(version: str, name: str, overall: str,
                                   items: list[tuple[int, str, str]]) -> None:
    decision = parse_response_bundle(load(version, name))
    assert decision.overall == overall
    assert [(i.sequence, i.code, i.auth_number) for i in decision.items] == items


@pytest.mark.parametrize(("version", "name", "overall"), CLAIM_RESPONSES)
def test_official_claim_responses(version: str, name: str, overall: str) -> None:
    assert from_claim_response(load(version, name)).overall == overall


@pytest.mark.parametrize("version", ["2.0.1", "2.2.1"])
def test_business_errors_are_surfaced(version: str) -> None:
    decision = from_claim_response(load(version, "ClaimResponse-ErrorResponseExample.json"))
    assert [e.code for e in decision.errors] == ["04", "T4"]
    if version == "2.2.1":
        assert decision.errors[1].followup == "C"
        assert decision.errors[1].element == "2010A-NM103"
        assert decision.errors[1].path == "Bundle.entry[1].Organization.name"
    assert "payer errors: 04" in decision.summary()


def approved() -> dict[str, Any]:
    return copy.deepcopy(load("2.2.1", "Bundle-ReferralAuthorizationResponseBundleExample.json"))


def set_code(bundle: dict[str, Any], code: str | None) -> dict[str, Any]:
    item = bundle["entry"][0]["resource"]["item"][0]
    action = item["adjudication"][0]["extension"][0]
    if code is None:
        del item["adjudication"][0]["extension"]
        return item
    for part in action["extension"]:
        if part["url"].endswith("reviewActionCode"):
            part["valueCodeableConcept"]["coding"][0]["code"] = code
    return item


def test_modified_reads_the_authorized_form_from_add_item() -> None:
    """No official A6 example exists: a copy of the approved example made A6 with an addItem."""
    bundle = approved()
    set_code(bundle, "A6")
    add = {"itemSequence": [1], "productOrService": {"coding": [
        {"system": "http://www.ama-assn.org/go/cpt", "code": "99242"}]},
        "adjudication": [{"category": {"coding": [{"code": "submitted"}]}}]}
    bundle["entry"][0]["resource"]["addItem"] = [add]
    decision = parse_response_bundle(bundle)
    assert decision.overall == "modified"   # authorized, in the form addItem states
    assert decision.items[0].status == "modified"
    assert decision.items[0].modification == add


@pytest.mark.parametrize(("code", "overall"), [("A2", "partially-approved"),
                                               ("C", "cancelled"),
                                               ("CT", "contact-payer"),
                                               ("NA", "no-auth-required"),
                                               ("ZZ", "unknown")])
def test_each_review_action_code_has_its_own_state(code: str, overall: str) -> None:
    """Contact payer (CT), partial certification (A2) and no authorization required (NA) are
    states of their own, never folded into partial or approved."""
    bundle = approved()
    set_code(bundle, code)
    assert parse_response_bundle(bundle).overall == overall


@pytest.mark.parametrize(("codes", "overall"), [
    (["A1", "A3"], "partial"), (["A1", "CT"], "contact-payer"), (["A1", "NA"], "approved"),
    (["A1", "A6"], "modified"), (["A1", "A2"], "partially-approved"), (["A3", "C"], "denied"),
    (["A1", "A4"], "pending")])
def test_several_items(codes: list[str], overall: str) -> None:
    bundle = approved()
    claim_response = bundle["entry"][0]["resource"]
    first = claim_response["item"][0]
    claim_response["item"] = [{**copy.deepcopy(first), "itemSequence": n + 1}
                              for n in range(len(codes))]
    for n, code in enumerate(codes):
        single = {"entry": [{"resource": {"item": [claim_response["item"][n]]}}]}
        set_code(single, code)
    assert parse_response_bundle(bundle).overall == overall


def test_never_decides_from_outcome_status_or_pre_auth_ref() -> None:
    bundle = approved()
    set_code(bundle, None)
    claim_response = bundle["entry"][0]["resource"]
    claim_response["preAuthRef"] = "AUTH-FROM-HEADER"
    assert claim_response["outcome"] == "complete" and claim_response["status"] == "active"
    decision = parse_response_bundle(bundle)
    assert decision.overall == "unknown"
    assert decision.items[0].status == "unknown" and decision.auth_number == ""


def test_queued_outcome_of_a_2_0_1_payer_is_pending() -> None:
    bundle = approved()
    set_code(bundle, None)
    bundle["entry"][0]["resource"]["outcome"] = "queued"
    assert parse_response_bundle(bundle).overall == "pending"


def test_inquire_reply_parameters_and_bundle() -> None:
    parameters = load("2.2.1", "Parameters-PASClaimInquiryOperationResponseExample.json")
    assert [d.overall for d in parse_inquire_reply(parameters)] == ["approved"]
    renamed = copy.deepcopy(parameters)
    renamed["parameter"][0]["name"] = "return"
    renamed["parameter"].append(copy.deepcopy(renamed["parameter"][0]))
    assert len(parse_inquire_reply(renamed)) == 2
    bundle = load("2.0.1", "Bundle-PASClaimInquiryResponseBundleExample.json")
    assert [d.auth_number for d in parse_inquire_reply(bundle)] == ["AUTH0001"]
    assert parse_inquire_reply({"resourceType": "Parameters"}) == []


def test_not_a_response() -> None:
    with pytest.raises(ResponseError):
        parse_response_bundle(load("2.2.1", "OperationOutcome-InvalidRequestResponse.json"))
    with pytest.raises(ResponseError):
        parse_inquire_reply({"resourceType": "OperationOutcome"})


PATIENT = {"resourceType": "Patient", "id": "p1",
           "identifier": [{"system": "urn:member", "value": "M-1"}]}


@pytest.mark.parametrize(("patient", "about_ours"), [
    ({}, False),                                                  # names no patient
    ({"display": "M-1"}, False),                                  # a name says nothing
    ({"identifier": {"system": "urn:member", "value": ""}}, False),
    ({"identifier": {"system": "urn:other-mrn", "value": "M-1"}}, False),  # another assigner's
    ({"identifier": {"value": "M-1"}}, True),                      # no system: the value decides
    ({"reference": "urn:uuid:ours"}, True),                       # the Claim's own reference
    ({"reference": "Patient/p1"}, True),
    ({"reference": "https://payer.example/fhir/Patient/p1"}, True),
    ({"reference": "Patient/p2", "identifier": {"value": "M-1"}}, True),
    ({"reference": "Patient/p2"}, False),
    ({"identifier": {"system": "urn:member", "value": "M-2"}}, False),
])
def test_names_patient(patient: dict[str, Any], about_ours: bool) -> None:
    decision = from_claim_response({"resourceType": "ClaimResponse", "patient": patient})
    assert names_patient(decision, "urn:uuid:ours", PATIENT) is about_ours


def test_the_patient_a_reply_holds_is_read_for_its_identifiers() -> None:
    reply = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:cr", "resource": {"resourceType": "ClaimResponse",
                                               "patient": {"reference": "urn:uuid:theirs"}}},
        {"fullUrl": "urn:uuid:theirs", "resource": {**PATIENT, "id": "payer-9"}}]}
    [decision] = read_reply(200, reply).decisions
    assert decision.patient_identifiers == (("urn:member", "M-1"),)
    assert names_patient(decision, "urn:uuid:ours", PATIENT) is True


OURS = {**PATIENT, "name": [{"family": "Rivera", "given": ["Ana"]}], "birthDate": "1980-02-03"}


@pytest.mark.parametrize(("held", "mismatch"), [
    ({}, ""),                                                      # nothing to compare
    ({"name": [{"family": " rivera ", "given": ["Anita"]}], "birthDate": "1980-02-03"}, ""),
    ({"name": [{"family": "Stone"}]}, "family name"),
    ({"name": [{"family": "Rivera"}], "birthDate": "1979-02-03"}, "birth date"),
    ({"name": [{"family": "Stone"}], "birthDate": "1931-01-01"}, "family name and birth date"),
])
@pytest.mark.parametrize("shape", ["entry", "contained"])
def test_the_patient_a_reply_holds_is_compared_with_ours(
        held: dict[str, Any], mismatch: str, shape: str) -> None:
    """Our identifier on a Patient with another family name or birth date is a mismatch,
    whether the reply holds that Patient as a Bundle entry or contained in the ClaimResponse."""
    patient = {"resourceType": "Patient", "id": "payer-9", "identifier": PATIENT["identifier"],
               **held}
    claim_response: dict[str, Any] = {"resourceType": "ClaimResponse",
                                      "patient": {"reference": "Patient/payer-9"}}
    entries = [{"fullUrl": "urn:uuid:cr", "resource": claim_response}]
    if shape == "contained":
        claim_response.update(contained=[patient], patient={"reference": "#payer-9"})
    else:
        entries.append({"fullUrl": "urn:uuid:theirs", "resource": patient})
    [decision] = read_reply(200, {"resourceType": "Bundle", "entry": entries}).decisions
    assert names_patient(decision, "urn:uuid:ours", OURS) is True
    assert patient_mismatch(decision, OURS) == mismatch
