"""An [[access.tenants]] source must name one organisation's origin, not only a kind."""

from __future__ import annotations

import pytest

from access.config import AccessConfigError, from_section


@pytest.mark.parametrize("source", ["fhir", "fhir|", "hl7|"])
def test_a_source_naming_only_a_kind_is_refused(source: str):
    with pytest.raises(AccessConfigError, match="names no FHIR server or sending facility"):
        from_section({"tenants": [{"name": "north", "sources": ["hl7|NORTH", source]}]})


def test_sources_naming_an_origin_are_kept_without_a_trailing_bar():
    config = from_section({"tenants": [{"name": "north", "sources": [
        "fhir|https://ehr.north.example/fhir|", "hl7|NORTH", "demo"]}]})
    assert config.tenants[0].sources == ("fhir|https://ehr.north.example/fhir", "hl7|NORTH",
                                         "demo")
