"""The day's plan reads every patient's consent in bulk: opt-outs per channel and per address,
and the contact points the provider refused, only for that patient's own addresses."""

from __future__ import annotations

from datetime import UTC, datetime

from outreach.contacts import ContactPoint
from outreach.dailyplan import _consent
from outreach.rules import Consent, PatientView

PHONE, EMAIL, OTHER = "+12125550123", "pat@example.org", "+12125550999"
VIEW = PatientView((ContactPoint("sms", PHONE, PHONE, 1, "mobile"),
                    ContactPoint("email", EMAIL, EMAIL, 2, "")), ("America/New_York",))
FAILING = {PHONE: frozenset({f"sms:{PHONE}", f"voice:{PHONE}"}),
           OTHER: frozenset({f"sms:{OTHER}"})}


def at(hour: int) -> datetime:
    return datetime(2030, 3, 5, hour, tzinfo=UTC)


def test_no_events_and_no_refusals_is_no_restriction() -> None:
    assert _consent(VIEW, None, {}) == Consent()
    assert _consent(VIEW, [], {OTHER: FAILING[OTHER]}) == Consent()


def test_refused_points_are_the_patients_own() -> None:
    assert _consent(VIEW, None, FAILING) == Consent(failing=FAILING[PHONE])


def test_opt_outs_per_channel_and_per_address_in_time_order() -> None:
    events = [(at(9), "email", "opt-out", ""), (at(10), "email", "opt-in", ""),
              (at(11), "voice", "opt-out", ""), (at(12), "sms", "opt-out", PHONE),
              (at(13), "sms", "opt-out", OTHER), (at(14), "sms", "opt-in", OTHER)]
    assert _consent(VIEW, events, FAILING) == Consent(
        frozenset({"voice"}), frozenset({PHONE}), FAILING[PHONE])
