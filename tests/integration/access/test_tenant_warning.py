"""The start-up warning for a tenant whose sources match no referral quotes each source, so a
stray space or case in the configuration shows (it printed `(hl7|SOUTH )`)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from referrals.model import Command, Referral, new_referral_id
from refloop.app import create_app
from refloop.services import build_services
from refloop.settings import Settings


def test_the_warning_quotes_each_unmatched_source(database_url: str, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    services = build_services(Settings(
        var_dir=tmp_path / "var", database_url=database_url, sections={"access": {"tenants": [
            {"name": "north", "sources": ["hl7|NORTH"]},
            {"name": "south", "sources": ["hl7|SOUTH ", "hl7|south"]}]}}))
    try:
        services.referrals.open(Referral(id=new_referral_id(), source_key="hl7|NORTH|1",
                                         service_request="ServiceRequest/1",
                                         patient="Patient/1"), Command("detect"))
        caplog.set_level(logging.WARNING, logger="refloop.access")
        create_app(services)
        warned = [r.getMessage() for r in caplog.records if "access.tenants" in r.getMessage()]
        assert len(warned) == 1 and "south" in warned[0] and "north" not in warned[0]
        assert "sources ('hl7|SOUTH ', 'hl7|south')" in warned[0]
    finally:
        services.close()
