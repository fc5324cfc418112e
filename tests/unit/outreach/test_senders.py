"""[[outreach.twilio.senders]]: one Twilio sender per tenant, chosen by the referral's source."""

from __future__ import annotations

from pathlib import Path

import pytest

from outreach.config import OutreachConfig, OutreachConfigError, from_settings, with_tenant_sources

BASE = {"account_sid": "AC1", "auth_token": "t", "from_number": "+15005550006"}


def _config(twilio: dict, tenants: dict | None = None) -> OutreachConfig:
    config = from_settings({"twilio": twilio}, Path("/tmp"), "http://127.0.0.1")
    return with_tenant_sources(config, tenants or {})


def test_the_referral_source_chooses_the_tenant_sender_else_the_default() -> None:
    config = _config({**BASE, "senders": [
        {"tenant": "north", "from_number": "+15005550101"},
        {"tenant": "south", "sources": "fhir|https://s.example/fhir|",
         "messaging_service_sid": "MG2"}]}, {"north": ("hl7|NORTH",)}).twilio
    assert config.sender_for("hl7|NORTH|MSG1").sms == {"from_": "+15005550101"}
    assert config.sender_for("fhir|https://s.example/fhir|SR/1").sms == \
        {"messaging_service_sid": "MG2"}
    # a prefix must end at a separator: hl7|NORTHWEST is not north's
    assert config.sender_for("hl7|NORTHWEST|MSG1").sms == {"from_": "+15005550006"}
    assert config.sender_for("demo|1").tenant == ""


def test_without_a_default_a_referral_of_no_tenant_has_no_sender() -> None:
    twilio = {k: v for k, v in BASE.items() if k != "from_number"}
    config = _config({**twilio, "senders": [
        {"tenant": "north", "sources": ["hl7|NORTH"], "messaging_service_sid": "MG1"}]}).twilio
    assert config.configured and not config.calls
    assert config.sender_for("hl7|OTHER|1") is None


@pytest.mark.parametrize(("senders", "tenants", "says"), [
    ([{"from_number": "+15005550101"}], {}, "'tenant' is required"),
    ([{"tenant": "north", "sources": ["hl7|N"]}], {}, "messaging_service_sid"),
    ([{"tenant": "north", "from_number": "+1500555010"}], {}, "no [[access.tenants]]"),
    ([{"tenant": "n", "sources": ["a"], "from_number": "+1"},
      {"tenant": "n", "sources": ["b"], "from_number": "+2"}], {}, "one sender per tenant"),
    ([{"tenant": "n", "sources": ["a"], "from": "+1"}], {}, "unknown keys"),
])
def test_wrong_senders_are_refused_with_what_to_do(senders: list, tenants: dict,
                                                   says: str) -> None:
    with pytest.raises(OutreachConfigError) as caught:
        _config({**BASE, "senders": senders}, tenants)
    assert says in str(caught.value)
