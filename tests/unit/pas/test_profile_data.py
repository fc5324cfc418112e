"""Building the check's package data: reading package tarballs, what the PAS profiles reach,
value sets expanded (or reduced to their code systems), and the shipped data itself."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from pas_client.profile_data import (
    BASE,
    Source,
    Stack,
    load_package_data,
    reachable,
    read_package,
)
from pas_client.terminology_build import ValueSetIndex, compile_value_set

PAS = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/"


def tarball(path: Path, resources: list[dict[str, Any]]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for i, resource in enumerate(resources):
            data = json.dumps(resource).encode()
            info = tarfile.TarInfo(f"package/{resource['resourceType']}-{i}.json")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        example = tarfile.TarInfo("package/example/StructureDefinition-x.json")
        example.size = 2
        archive.addfile(example, io.BytesIO(b"{}"))
    return path


def sd(url: str, type_: str, elements: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "StructureDefinition", "url": url, "type": type_,
            "kind": "resource", "snapshot": {"element": elements}}


def test_read_package_keeps_conformance_resources_by_url(tmp_path: Path) -> None:
    path = tarball(tmp_path / "p.tgz", [
        sd(BASE + "Period", "Period", [{"id": "Period", "path": "Period"}]),
        {"resourceType": "ValueSet", "url": "http://x/vs"},
        {"resourceType": "Patient", "id": "example"}])
    found = read_package(path)
    assert sorted(found) == [BASE + "Period", "http://x/vs"]


def test_reachable_follows_types_profiles_targets_and_required_bindings() -> None:
    claim = sd(PAS + "profile-claim", "Claim", [
        {"id": "Claim", "path": "Claim"},
        {"id": "Claim.billablePeriod", "path": "Claim.billablePeriod",
         "type": [{"code": "Period"}]},
        {"id": "Claim.patient", "path": "Claim.patient",
         "type": [{"code": "Reference", "targetProfile": [PAS + "profile-beneficiary"]}]},
        {"id": "Claim.use", "path": "Claim.use", "type": [{"code": "code"}],
         "binding": {"strength": "required", "valueSet": "http://x/claim-use|4.0.1"}},
        {"id": "Claim.type", "path": "Claim.type", "type": [{"code": "CodeableConcept"}],
         "binding": {"strength": "example", "valueSet": "http://x/example"}}])
    beneficiary = sd(PAS + "profile-beneficiary", "Patient", [{"id": "Patient",
                                                               "path": "Patient"}])
    base = {BASE + name: sd(BASE + name, name, [{"id": name, "path": name}])
            for name in ("Period", "Reference", "code", "CodeableConcept", "Patient", "Bundle")}
    pas_source = Source("pas", "1", "", False)
    core_source = Source("core", "1", "", False)
    stack = Stack([(pas_source, {claim["url"]: claim, beneficiary["url"]: beneficiary}),
                   (core_source, base)])
    structures, value_sets = reachable(stack)
    assert {PAS + "profile-claim", PAS + "profile-beneficiary", BASE + "Period",
            BASE + "Reference", BASE + "Patient", BASE + "Bundle"} <= set(structures)
    assert value_sets == {"http://x/claim-use"}
    assert structures[BASE + "Period"]["package"] == "core#1"


def index(*resources: dict[str, Any]) -> ValueSetIndex:
    by_url = {r["url"]: r for r in resources}
    return ValueSetIndex(lambda url: (None, by_url[url]) if url in by_url else None)


def test_value_sets_expand_codes_and_keep_systems_they_cannot_list() -> None:
    gender = {"resourceType": "CodeSystem", "url": "http://g", "content": "complete",
              "concept": [{"code": "male"}, {"code": "female", "concept": [{"code": "x"}]}]}
    vs = {"resourceType": "ValueSet", "url": "http://vs", "compose": {"include": [
        {"system": "http://g"},
        {"system": "http://www.ama-assn.org/go/cpt"},
        {"system": "http://other", "concept": [{"code": "a"}]}]}}
    compiled = compile_value_set("http://vs", index(gender, vs))
    assert compiled["systems"] == {"http://g": ["female", "male", "x"],
                                   "http://www.ama-assn.org/go/cpt": None,
                                   "http://other": ["a"]}
    assert any("ama-assn" in note for note in compiled["notes"])


def test_filters_on_a_complete_hierarchy_are_evaluated() -> None:
    system = {"resourceType": "CodeSystem", "url": "http://h", "content": "complete",
              "concept": [{"code": "root", "concept": [{"code": "a"}, {"code": "b"}]},
                          {"code": "other"}]}
    vs = {"resourceType": "ValueSet", "url": "http://vs", "compose": {"include": [
        {"system": "http://h", "filter": [{"property": "concept", "op": "is-a",
                                            "value": "root"}]}]}}
    assert compile_value_set("http://vs", index(system, vs))["systems"] == {
        "http://h": ["a", "b", "root"]}


@pytest.mark.parametrize(("url", "systems"), [
    ("https://valueset.x12.org/x217/005010/request/2000F/UM/1/03/00/1365",
     {"https://codesystem.x12.org/005010/1365": None}),
    ("https://valueset.x12.org/x217/005010/request/2000E/CL1/1/01/00/1315",
     {"https://codesystem.x12.org/005010/1315": None,
      "https://www.nubc.org/CodeSystem/PriorityTypeOfAdmitOrVisit": None}),
    ("http://loinc.org/vs/valid-hl7-attachment-requests", {"http://loinc.org": None}),
])
def test_unpublished_value_sets_name_their_systems(url: str, systems: dict[str, Any]) -> None:
    assert compile_value_set(url, index())["systems"] == systems


def test_unknown_value_set_is_not_checkable() -> None:
    compiled = compile_value_set("http://nowhere/vs", index())
    assert "systems" not in compiled and "not available" in compiled["notes"][0]


@pytest.mark.parametrize("version", ["2.0.1", "2.2.1"])
def test_shipped_data_holds_the_base_definitions(version: str) -> None:
    data = load_package_data(version)
    for name in ("Period", "Reference", "CodeableConcept", "Identifier", "Quantity",
                 "Extension", "Patient", "Claim", "Bundle"):
        assert BASE + name in data["structures"], name
    gender = data["valueSets"]["http://hl7.org/fhir/ValueSet/administrative-gender"]
    assert gender["systems"] == {"http://hl7.org/fhir/administrative-gender":
                                 ["female", "male", "other", "unknown"]}
    assert "Patient" in data["resourceTypes"] and len(data["resourceTypes"]) > 140
    assert data["unavailable"]
