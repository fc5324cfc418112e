"""The pre-flight check on the official PAS examples and on deliberately broken copies."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from pas_client.conformance import Finding, check_bundle

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "pas"


def _load(version: str, name: str) -> dict[str, Any]:
    import json

    data: dict[str, Any] = json.loads((FIXTURES / f"v{version}" / name).read_text("utf-8"))
    return data


REQUESTS = [(v, p.name) for v in ("2.0.1", "2.2.1")
            for p in sorted((FIXTURES / f"v{v}").glob("Bundle-*.json"))
            if "Response" not in p.name and "Notification" not in p.name]
REFERRAL = "Bundle-ReferralAuthorizationBundleExample.json"


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]


def kind_of(name: str) -> str:
    return "inquiry-request" if "Inquiry" in name else "request"


def test_the_examples_are_there() -> None:
    assert len(REQUESTS) == 13  # 7 in 2.0.1 (with the differential update), 6 in 2.2.1


@pytest.mark.parametrize(("version", "name"), REQUESTS)
def test_official_request_examples_pass_without_errors(version: str, name: str) -> None:
    findings = check_bundle(_load(version, name), version, kind_of(name))
    assert errors(findings) == []


@pytest.mark.parametrize("version", ["2.0.1", "2.2.1"])
def test_must_support_gaps_are_warnings_with_paths(version: str) -> None:
    findings = check_bundle(_load(version, REFERRAL), version)
    gaps = [f for f in findings if f.rule == "must-support"]
    assert gaps and all(f.severity == "warning" for f in gaps)
    assert any(f.path.startswith("Bundle.entry[0].resource.item[0].") for f in gaps)


def broken(version: str = "2.2.1") -> dict[str, Any]:
    return copy.deepcopy(_load(version, REFERRAL))


def entry_of(bundle: dict[str, Any], kind: str) -> tuple[int, dict[str, Any]]:
    for i, entry in enumerate(bundle["entry"]):
        if entry["resource"]["resourceType"] == kind:
            return i, entry["resource"]
    raise AssertionError(kind)


@pytest.mark.parametrize("version", ["2.0.1", "2.2.1"])
def test_missing_claim_fails(version: str) -> None:
    bundle = broken(version)
    del bundle["entry"][0]
    found = {(f.path, f.element, f.rule) for f in errors(check_bundle(bundle, version))}
    assert ("Bundle.entry", "Bundle.entry:Claim", "cardinality") in found
    first = ("Bundle", "Bundle", "invariant:ClaimFirst") if version == "2.2.1" else \
        ("Bundle.entry[0]", "Bundle.entry", "claim-first")  # 2.0.1 has no ClaimFirst invariant
    assert first in found


def test_claim_not_first_fails_claim_first() -> None:
    bundle = broken()
    bundle["entry"].append(bundle["entry"].pop(0))
    assert [f.rule for f in errors(check_bundle(bundle))] == ["invariant:ClaimFirst"]


@pytest.mark.parametrize("version", ["2.0.1", "2.2.1"])
def test_dangling_reference_fails(version: str) -> None:
    bundle = broken(version)
    bundle["entry"][0]["resource"]["patient"] = {"reference": "Patient/not-in-the-bundle"}
    found = errors(check_bundle(bundle, version))
    assert [(f.path, f.rule) for f in found] == [("Bundle.entry[0].resource.patient", "reference")]
    assert "Patient/not-in-the-bundle" in found[0].message


@pytest.mark.parametrize("version", ["2.0.1", "2.2.1"])
def test_wrong_use_fails(version: str) -> None:
    bundle = broken(version)
    bundle["entry"][0]["resource"]["use"] = "claim"
    found = errors(check_bundle(bundle, version))
    assert [(f.path, f.element, f.rule) for f in found] == [
        ("Bundle.entry[0].resource.use", "Claim.use", "pattern")]


def test_missing_member_id_fails() -> None:
    bundle = broken()
    index, coverage = entry_of(bundle, "Coverage")
    coverage["identifier"] = [{"system": "urn:example:other", "value": "X"}]
    found = errors(check_bundle(bundle))
    assert [(f.path, f.element) for f in found] == [
        (f"Bundle.entry[{index}].resource.identifier", "Coverage.identifier:memberid")]


def test_missing_certification_type_fails() -> None:
    bundle = broken()
    item = bundle["entry"][0]["resource"]["item"][0]
    item["extension"] = [e for e in item["extension"] if not e["url"].endswith("certificationType")]
    found = errors(check_bundle(bundle))
    assert [(f.path, f.element, f.rule) for f in found] == [
        ("Bundle.entry[0].resource.item[0].extension",
         "Claim.item.extension:certificationType", "cardinality")]


def test_fixed_bundle_type_and_unknown_elements_and_formats() -> None:
    bundle = broken()
    bundle["type"] = "transaction"
    bundle["timestamp"] = "yesterday"
    bundle["entry"][0]["resource"]["itme"] = []
    found = {(f.path, f.rule) for f in errors(check_bundle(bundle))}
    assert ("Bundle.type", "pattern") in found
    assert ("Bundle.timestamp", "type") in found
    assert ("Bundle.entry[0].resource.itme", "unknown-element") in found


def test_required_binding_in_package_is_checked() -> None:
    bundle = broken()
    claim = bundle["entry"][0]["resource"]
    claim["type"]["coding"][0]["code"] = "pharmacy"
    found = errors(check_bundle(bundle))
    assert [(f.path, f.rule) for f in found] == [("Bundle.entry[0].resource.type", "binding")]


def test_closed_slice_and_slice_cardinality_on_careteam_scope() -> None:
    bundle = broken()
    claim = bundle["entry"][0]["resource"]
    scope = claim["careTeam"][0]["extension"][0]
    del claim["careTeam"][0]["extension"]
    found = errors(check_bundle(bundle))
    assert any(f.path == "Bundle.entry[0].resource.careTeam[0].extension" and
               f.rule == "cardinality" for f in found), found
    assert scope["url"].endswith("careTeamClaimScope")
