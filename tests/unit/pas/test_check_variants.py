"""Valid variants of the official PAS examples pass the pre-flight check with no error, and the
check says what it could not check instead of passing it silently."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pas_client.conformance import check_bundle

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "pas"
REQUESTS = ["Bundle-ReferralAuthorizationBundleExample.json",
            "Bundle-HomecareAuthorizationBundleExample.json",
            "Bundle-MedicalServicesAuthorizationBundleExample.json"]
FOREIGN = "http://example.org/fhir/StructureDefinition/local-note"
Bundle = dict[str, Any]


def example(name: str, version: str) -> Bundle:
    data: Bundle = json.loads((FIXTURES / f"v{version}" / name).read_text("utf-8"))
    return data


def resources(bundle: Bundle, kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def reordered(bundle: Bundle) -> None:
    bundle["entry"] = bundle["entry"][:1] + bundle["entry"][:0:-1]


def optional_removed(bundle: Bundle) -> None:
    for item in bundle["entry"]:
        item["resource"].pop("text", None)
    for patient in resources(bundle, "Patient"):
        patient.pop("extension", None)
    claim = bundle["entry"][0]["resource"]
    for ident in claim.get("identifier", []):
        ident.pop("extension", None)
    for item in claim["item"]:
        item.pop("informationSequence", None)
    if "supportingInfo" in claim:
        kept = {i["valueReference"]["reference"].split("/")[-1]
                for i in claim["supportingInfo"] if "valueReference" in i}
        del claim["supportingInfo"]
        bundle["entry"] = [e for e in bundle["entry"] if e["resource"].get("id") not in kept
                           or e["resource"]["resourceType"] == "Claim"]


def must_support_added(bundle: Bundle) -> None:
    for patient in resources(bundle, "Patient"):
        patient.setdefault("birthDate", "1970-01-25")
        patient.setdefault("address", [{"line": ["1 Main St"], "city": "Boston",
                                        "state": "MA", "postalCode": "02110",
                                        "country": "US"}])
    for coverage in resources(bundle, "Coverage"):
        coverage.setdefault("period", {"start": "2024-01-01", "end": "2024-12-31"})
    for organization in resources(bundle, "Organization"):
        organization.setdefault("telecom", [{"system": "phone", "value": "555-0100"}])
    item = bundle["entry"][0]["resource"]["item"][0]
    item.setdefault("quantity", {"value": 3})
    item.setdefault("servicedDate", "2024-03-01")


def urn_uuid_full_urls(bundle: Bundle) -> None:
    urns = {}
    for item in bundle["entry"]:
        resource = item["resource"]
        urn = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, item['fullUrl'])}"
        urns[f"{resource['resourceType']}/{resource['id']}"] = urn
        item["fullUrl"] = urn

    def rewrite(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("reference"), str) and node["reference"] in urns:
                node["reference"] = urns[node["reference"]]
            for value in node.values():
                rewrite(value)
        elif isinstance(node, list):
            for value in node:
                rewrite(value)
    rewrite(bundle["entry"])


def foreign_extensions(bundle: Bundle) -> None:
    note = {"url": FOREIGN, "valueString": "entered at the front desk"}
    claim = bundle["entry"][0]["resource"]
    claim.setdefault("extension", []).append(copy.deepcopy(note))
    claim["item"][0].setdefault("extension", []).append(copy.deepcopy(note))
    for patient in resources(bundle, "Patient"):
        patient["name"][0].setdefault("extension", []).append(copy.deepcopy(note))
        patient["_gender"] = {"extension": [copy.deepcopy(note)]}


VARIANTS: dict[str, Callable[[Bundle], None]] = {
    "reordered entries": reordered, "optional elements removed": optional_removed,
    "extra must-support elements": must_support_added, "urn:uuid fullUrls": urn_uuid_full_urls,
    "foreign extensions": foreign_extensions}


@pytest.mark.parametrize("version", ["2.0.1", "2.2.1"])
@pytest.mark.parametrize("name", REQUESTS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_valid_variant_passes(variant: str, name: str, version: str) -> None:
    bundle = example(name, version)
    VARIANTS[variant](bundle)
    errors = [str(f) for f in check_bundle(bundle, version) if f.severity == "error"]
    assert errors == []


def test_all_variants_at_once_pass() -> None:
    bundle = example(REQUESTS[0], "2.2.1")
    for mutate in VARIANTS.values():
        mutate(bundle)
    assert [str(f) for f in check_bundle(bundle) if f.severity == "error"] == []


def test_what_is_not_checked_is_reported() -> None:
    bundle = example(REQUESTS[0], "2.2.1")
    foreign_extensions(bundle)
    notes = [f for f in check_bundle(bundle) if f.severity == "information"]
    assert all(f.rule == "not-checked" for f in notes)
    text = "\n".join(f.message for f in notes)
    assert "X12 codes are licensed: only the code system (https://codesystem.x12.org/005010/1365)" \
        in text
    assert f"extension {FOREIGN} is not known here" in text
    assert "codes of http://hl7.org/fhir/sid/icd-10-cm are not shipped" in text
    assert "invariant txt-1 is not evaluated" in text  # the example carries narrative
    assert len({f.message for f in notes}) == len(notes)  # each said once


def test_unknown_modifier_extension_fails() -> None:
    bundle = example(REQUESTS[0], "2.2.1")
    bundle["entry"][0]["resource"]["item"][0]["modifierExtension"] = [
        {"url": FOREIGN, "valueBoolean": True}]
    found = [(f.path, f.rule) for f in check_bundle(bundle) if f.severity == "error"]
    assert found == [("Bundle.entry[0].resource.item[0].modifierExtension[0]", "extension")]


def test_relative_references_resolve_against_the_full_url_base() -> None:
    bundle = example(REQUESTS[0], "2.2.1")
    for item in bundle["entry"]:
        resource = item["resource"]
        item["fullUrl"] = f"https://ehr.example/fhir/{resource['resourceType']}/{resource['id']}"
    claim = bundle["entry"][0]["resource"]
    claim["patient"] = {"reference": "Patient/SubscriberExample"}
    assert [f for f in check_bundle(bundle) if f.severity == "error"] == []
    claim["patient"] = {"reference": "Patient/nobody"}
    found = [(f.path, f.rule) for f in check_bundle(bundle) if f.severity == "error"]
    assert found == [("Bundle.entry[0].resource.patient", "reference")]
