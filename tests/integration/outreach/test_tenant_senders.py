"""Each tenant's texts and calls come from its own Twilio sender (Messaging Service or From
number), chosen from the referral's source; other referrals use the deployment's default.
Against THE TWILIO SANDBOX (a fake gateway: the real one cannot run here)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from outreach_harness import Harness, make_harness

from outreach.sandbox import MailCapture, TwilioSandbox

NORTH, SOUTH = "+15005550101", "MG" + "1" * 32
NORTH_CALLS = "+15005550102"


@pytest.fixture
def tenants(database_url: str, tmp_path: Path,
            sandboxes: tuple[TwilioSandbox, MailCapture]) -> Iterator[Harness]:
    senders = [{"tenant": "north", "from_number": NORTH, "voice_from": NORTH_CALLS},
               {"tenant": "south", "sources": ["fhir|https://south.example/fhir"],
                "messaging_service_sid": SOUTH}]
    access = {"tenants": [{"name": "north", "sources": ["hl7|NORTH_ADT"]}]}
    yield from make_harness(database_url, tmp_path, sandboxes,
                            twilio_extra={"senders": senders}, sections={"access": access})


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_each_tenant_texts_and_calls_from_its_own_sender(tenants: Harness) -> None:
    h = tenants
    phones = {"n1": "+12125550124", "s1": "+12125550125", "d1": "+12125550126"}
    for pid, phone in phones.items():
        h.patient(pid, phone=phone)
    # north's sources come from [[access.tenants]], south lists its own, d1 is nobody's
    h.referral("n1", priority="urgent", source="hl7|NORTH_ADT")
    h.referral("s1", source="fhir|https://south.example/fhir")
    h.referral("d1", source="ehr")
    h.settle()
    senders = {pid: [m.from_ for m in h.twilio.messages(phone)] for pid, phone in phones.items()}
    assert senders == {"n1": [NORTH], "s1": [SOUTH], "d1": ["+15005550006"]}
    # the urgent ladder calls after 2 h: from north's calling number
    h.advance(hours=2, minutes=1)
    assert [c.from_ for c in h.twilio.calls(phones["n1"])] == [NORTH_CALLS]
