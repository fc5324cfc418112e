"""The demo's scheduling step against sekmet-fhir: the calendar written to the EHR, a booking
link for the demo referral, the first slot booked (the Appointment on the EHR), the
confirmation with its .ics asked of outreach; a second run shows the same booking."""

from __future__ import annotations

from pathlib import Path

from calendar_data import Sekmet

from referrals.model import Stage
from refloop.services import build_services
from refloop.settings import Settings
from refloop.wiring.scheduling import run_demo_scheduling


def test_the_demo_books_a_slot_and_shows_the_confirmation(sqlite_url: str, tmp_path: Path,
                                                          sekmet: Sekmet) -> None:
    services = build_services(Settings(var_dir=tmp_path / "var", database_url=sqlite_url,
                                       public_base_url="https://refloop.test"))
    try:
        wired = services.adapters["scheduling"]
        listeners = list(services.referrals.listeners)
        lines: list[str] = []
        shown = run_demo_scheduling(services, sekmet.base, echo=lines.append)
        text = "\n".join(lines)
        assert "booking link for referral" in text and "https://refloop.test/p/" in text, text
        assert text.count("  free: ") == 3, text
        assert shown["booked"] and shown["confirmation"]
        appointment = wired.core.resources.try_get(
            "Appointment", shown["booked"].split("/")[1], server=sekmet.base)
        assert appointment is not None and appointment["status"] == "booked"
        assert f"booked: {shown['booked']} on the EHR, booked" in text
        assert "the referral is now scheduled" in text
        assert "confirmation for outreach to send" in text and ".ics" in text, text
        assert services.referrals.listeners == listeners  # the configured listener is back

        again: list[str] = []
        assert run_demo_scheduling(services, sekmet.base, echo=again.append)["booked"] == \
            shown["booked"]
        assert "  free: " not in "\n".join(again)
        assert services.store.get(shown["referral_id"]).stage == Stage.SCHEDULED
    finally:
        services.close()
