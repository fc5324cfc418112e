"""A ServiceRequest whose specialty or payer name is longer than the referral's columns opens
its referral on SQLite and PostgreSQL alike (PostgreSQL refused it: the notification went to
quarantine), and reading it again changes nothing."""

from __future__ import annotations

from referrals.model import Command
from refloop.services import Services
from subscriptions.mapping import changed_fields, to_referral_draft, to_referral_fields

SR = {"resourceType": "ServiceRequest", "id": "long", "status": "active", "intent": "order",
      "subject": {"reference": "Patient/p1"}, "performerType": {"text": "S" * 2000},
      "insurance": [{"reference": "Coverage/c1"}]}
INCLUDED = {"Coverage/c1": {"resourceType": "Coverage", "id": "c1",
                            "payor": [{"display": "P" * 5000}]}}


def test_a_long_specialty_and_payer_open_the_referral(services: Services) -> None:
    referral, created = services.referrals.open(
        to_referral_draft("https://ehr.example/fhir", SR, INCLUDED), Command("detect"))
    assert created
    stored = services.store.get(referral.id)
    assert (stored.specialty, stored.payer) == ("S" * 128, "P" * 256)
    assert changed_fields(stored, to_referral_fields(SR, INCLUDED)) == {}
