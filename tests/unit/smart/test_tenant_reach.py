"""A SMART tenant's link to its organisation ([[access.tenants]] sources), the start-up warning
for a deployment whose EHRs are not all limited, and what a launch's reach allows."""

from __future__ import annotations

from pathlib import Path

import pytest

from smart_app.config import (
    SmartConfigError,
    from_section,
    link_access_tenants,
    unlimited_tenants_warning,
)
from smart_app.reach import Reach


def _tenant(name: str, **extra: object) -> dict[str, object]:
    return {"name": name, "iss": f"https://{name}.example/fhir", "client_id": name,
            "ehr_origins": [f"https://{name}.example"], "client_secret": "s", **extra}


def _config(*tenants: dict[str, object]):
    return from_section({"tenants": list(tenants)}, Path("var"))


def test_access_tenant_brings_that_organisations_sources():
    linked = link_access_tenants(_config(_tenant("north", access_tenant="n"), _tenant("demo")),
                                 {"n": ("fhir|https://north.example/fhir", "hl7|NORTH")})
    assert linked.tenant("north").sources == ("fhir|https://north.example/fhir", "hl7|NORTH")
    assert linked.tenant("demo").sources is None  # no limit: today's behaviour


def test_an_unknown_access_tenant_or_a_sources_key_is_refused_with_what_to_do():
    with pytest.raises(SmartConfigError, match=r"access_tenant 'nort' is not the name of an "
                       r"\[\[access.tenants\]\] entry \(known: north\)"):
        link_access_tenants(_config(_tenant("a", access_tenant="nort")), {"north": ("demo",)})
    with pytest.raises(SmartConfigError, match="define the organisation's sources once"):
        _config(_tenant("a", sources=["demo"]))


def test_several_tenants_with_one_unlimited_are_warned_about():
    one = link_access_tenants(_config(_tenant("north", access_tenant="n")), {"n": ("demo",)})
    assert unlimited_tenants_warning(_config(_tenant("solo"))) == ""
    assert unlimited_tenants_warning(one) == ""
    two = link_access_tenants(_config(_tenant("north", access_tenant="n"), _tenant("south")),
                              {"n": ("demo",)})
    warning = unlimited_tenants_warning(two)
    assert "south has no access_tenant" in warning and "every organisation's" in warning


def test_reach_by_source_and_by_patient():
    north = Reach(sources=("fhir|https://n/fhir",))
    assert north.allows("fhir|https://n/fhir|ServiceRequest/1", "Patient/p1")
    assert not north.allows("fhir|https://n/fhir2|ServiceRequest/1", "Patient/p1")
    assert not north.allows("hl7|N|1", "Patient/p1")
    patient = Reach(patient="Patient/p1", patient_servers=("https://n/fhir",))
    assert patient.allows("fhir|https://n/fhir|ServiceRequest/1", "Patient/p1")
    assert not patient.allows("fhir|https://n/fhir|ServiceRequest/1", "Patient/p2")
    assert not patient.allows("fhir|https://other/fhir|ServiceRequest/1", "Patient/p1")
    nobody = Reach(patient="", patient_servers=("https://n/fhir",))
    assert not nobody.allows("fhir|https://n/fhir|ServiceRequest/1", "")
    assert nobody.query_sources == () and Reach().query_sources is None


def test_an_iss_in_two_tenants_is_refused():
    """A launch names only its iss: the second tenant's organisation would get the first's."""
    with pytest.raises(SmartConfigError, match=r"'north' and 'east' both allow iss "
                       r"'https://north.example/fhir'"):
        _config(_tenant("north", access_tenant="north"),
                _tenant("east", access_tenant="east", iss=["https://north.example/fhir/"]))
