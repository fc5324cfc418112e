"""The demo's outreach part: the first SMS within seconds for a patient inside the calling
window, the quiet-hours deferral for one outside it (zones chosen from the current time), and a
STOP from a third patient honoured before the next message."""

from __future__ import annotations

from datetime import UTC, datetime

from outreach.demo import choose_zones
from refloop.services import Services
from refloop.wiring.outreach import run_demo_outreach


def test_demo_shows_a_send_a_deferral_and_a_stop(services: Services) -> None:
    lines: list[str] = []
    shown = run_demo_outreach(services, echo=lines.append)
    text = "\n".join(lines)
    assert "first SMS handed to the gateway after" in text, text
    assert "first SMS deferred [quiet-hours]" in text, text
    assert "opted out of sms" in text and "not sent [opted-out]" in text, text
    assert "Time to first contact" in text
    assert shown["after_stop"] == "opted-out" and len(shown["first_contact_seconds"]) == 2
    assert "THE TWILIO SANDBOX, a fake SMS gateway" in text


def test_the_demo_always_finds_a_day_zone_and_a_night_zone() -> None:
    for hour in range(24):
        for minute in (0, 30):
            day, night = choose_zones(datetime(2030, 1, 15, hour, minute, tzinfo=UTC))
            assert day != night
            day, night = choose_zones(datetime(2030, 7, 15, hour, minute, tzinfo=UTC))
            assert day != night
