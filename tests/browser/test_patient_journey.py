"""The patient's whole journey in headless Chromium at 375x667 (a phone), against sekmet-fhir
as the EHR, with axe-core finding no serious or critical violation on any page:

the booking link (as outreach's ladder asks for it: `issue_booking_link`), a wrong date of birth
(refused), the right one, the slots, booking (the Appointment on the EHR), the confirmation with
its .ics, the reminder on a fake clock, the reply C, the visit marked noshow on the EHR, the
recovery message with a new link, and rebooking. Also: the pages fit 320 px without sideways
scrolling, and read in Spanish for a Spanish-speaking patient.

The messages are the `outreach.message` work items Refloop hands to the outreach adapter (the
agreed boundary); the SMS itself is outreach's part.
"""

from __future__ import annotations

import base64
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import icalendar
import pytest
from werkzeug.serving import make_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration" / "scheduling"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from axe import serious_violations
from calendar_data import destination, make_calendar, put, start_sekmet
from sched_world import messages, open_referral

from referrals.model import Stage
from referrals.store.work import WorkItem
from refloop.app import create_app
from refloop.services import build_services
from refloop.settings import Settings


@pytest.fixture
def journey(sqlite_url: str, tmp_path: Path) -> Any:
    peer = start_sekmet(tmp_path / "ehr")
    calendar = make_calendar(peer.base, slots=8)
    probe = make_server("127.0.0.1", 0, lambda e, s: [])
    port = probe.server_port
    probe.server_close()
    settings = Settings(var_dir=tmp_path / "var", database_url=sqlite_url,
                        public_base_url=f"http://localhost:{port}",
                        sections={"scheduling": {"destinations": [destination(calendar)]}})
    services = build_services(settings)
    server = make_server("127.0.0.1", port, create_app(services), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield services, calendar
    server.shutdown()
    services.close()
    peer.stop()


def check(chrome: Any, seen: list[str]) -> None:
    bad = serious_violations(chrome)
    assert bad == [], f"{chrome.current_url}: {bad}"
    seen.append(chrome.title)


def sign_in(chrome: Any, link: str, seen: list[str]) -> None:
    from selenium.webdriver.common.by import By

    chrome.get(link)
    check(chrome, seen)
    assert "Okafor" not in chrome.page_source
    fill_date(chrome, "24", "4", "1961")
    assert "does not match" in chrome.find_element(By.CSS_SELECTOR, "[role=alert]").text
    check(chrome, seen)
    fill_date(chrome, "23", "4", "1961")


def fill_date(chrome: Any, day: str, month: str, year: str) -> None:
    from selenium.webdriver.common.by import By

    for name, value in (("day", day), ("month", month), ("year", year)):
        field = chrome.find_element(By.ID, name)
        field.clear()
        field.send_keys(value)
    submit_and_wait(chrome, chrome.find_element(By.CSS_SELECTOR, "form button[type=submit]"))


def submit_and_wait(chrome: Any, button: Any) -> None:
    """Click and wait until the next page replaced this one."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    page = chrome.find_element(By.TAG_NAME, "html")
    button.click()
    WebDriverWait(chrome, 20).until(ec.staleness_of(page))


SHOTS = Path(__file__).resolve().parents[2] / "var" / "browser"


def book_first(chrome: Any, seen: list[str]) -> str:
    from selenium.webdriver.common.by import By

    assert chrome.find_element(By.TAG_NAME, "h1").text == "Choose a time"
    check(chrome, seen)
    SHOTS.mkdir(parents=True, exist_ok=True)
    chrome.save_screenshot(str(SHOTS / "patient-slots-375.png"))
    first = chrome.find_element(By.CSS_SELECTOR, "li.slot")
    key = first.find_element(By.NAME, "slot").get_attribute("value")
    submit_and_wait(chrome, first.find_element(By.TAG_NAME, "button"))
    assert chrome.find_element(By.TAG_NAME, "h1").text == "You are booked"
    check(chrome, seen)
    chrome.save_screenshot(str(SHOTS / "patient-booked-375.png"))
    return str(key)


def test_whole_patient_journey_on_a_phone(chrome: Any, journey: Any) -> None:
    from selenium.webdriver.common.by import By

    services, calendar = journey
    scheduling = services.adapters["scheduling"]
    chrome.set_window_size(375, 667)
    seen: list[str] = []
    referral = open_referral(services, calendar)

    link = scheduling.issue_booking_link(referral.id)
    sign_in(chrome, link, seen)
    width = chrome.execute_script("return document.documentElement.clientWidth")
    assert width <= 375
    booked_key = book_first(chrome, seen)
    [appointment] = calendar.search(f"Appointment?slot={booked_key}")
    assert appointment["status"] == "booked"
    assert services.store.get(referral.id).stage == Stage.SCHEDULED

    [confirmation] = messages(services.work, services, "booking-confirmation")
    ics = icalendar.Calendar.from_ical(base64.b64decode(
        confirmation["attachments"][0]["content_b64"]))
    assert str(ics.walk("VEVENT")[0]["location"]) == "Heart Clinic, 12 Elm Street"
    chrome.get(confirmation["params"]["link"])  # the link in the confirmation works too
    check(chrome, seen)

    row = scheduling.book.current(referral.id)
    first_due = scheduling.reminders.of_appointment(row.id)[0]["due_at"]
    assert scheduling.send_due_reminders(first_due + timedelta(minutes=1)) == 1  # fake clock
    [reminder] = messages(services.work, services, "reminder")
    assert scheduling.handle_reply({
        "referral_id": referral.id, "patient": referral.patient, "text": "C",
        "channel": "sms", "received_at": first_due.isoformat(), "communication_id": "sms-1",
        "reply_context": reminder["reply_context"]})
    chrome.get(chrome.current_url.split("/p/")[0] + "/p/home")
    assert "You confirmed this appointment." in chrome.page_source

    put(calendar.base, {**calendar.read(f"Appointment/{appointment['id']}"),
                        "status": "noshow"})
    scheduling.handle_appointment(WorkItem(0, "scheduling.appointment", "t", {
        "server": calendar.base, "resources": [
            calendar.read(f"Appointment/{appointment['id']}")]}, 1, 8, "t"))
    assert services.store.get(referral.id).stage == Stage.NO_SHOW
    from referrals.worker import Worker
    from refloop.wiring import all_handlers

    Worker(services.work, {"scheduling.recovery": all_handlers(services)[
        "scheduling.recovery"]}).drain()
    [recovery] = messages(services.work, services, "no-show-recovery")
    chrome.delete_all_cookies()
    sign_in(chrome, recovery["params"]["link"], seen)
    rebooked = book_first(chrome, seen)
    assert rebooked != booked_key
    assert services.store.get(referral.id).stage == Stage.SCHEDULED
    home = chrome.find_element(By.TAG_NAME, "main").text
    assert "Heart Clinic" in home
    assert len(seen) >= 9


def test_pages_fit_320_px_and_speak_spanish(chrome: Any, sqlite_url: str,
                                            tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    peer = start_sekmet(tmp_path / "ehr")
    calendar = make_calendar(peer.base, slots=3, language="es")
    probe = make_server("127.0.0.1", 0, lambda e, s: [])
    port = probe.server_port
    probe.server_close()
    services = build_services(Settings(
        var_dir=tmp_path / "var", database_url=sqlite_url,
        public_base_url=f"http://localhost:{port}",
        sections={"scheduling": {"destinations": [destination(calendar)]}}))
    server = make_server("127.0.0.1", port, create_app(services), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        chrome.set_window_size(320, 640)
        referral = open_referral(services, calendar)
        chrome.get(services.adapters["scheduling"].issue_booking_link(referral.id) + "?lang=es")
        assert chrome.find_element(By.TAG_NAME, "html").get_attribute("lang") == "es"
        fill_date(chrome, "23", "4", "1961")
        assert chrome.find_element(By.TAG_NAME, "h1").text == "Elija un horario"
        assert chrome.execute_script(
            "return document.documentElement.scrollWidth <= document.documentElement"
            ".clientWidth")
        assert serious_violations(chrome) == []
        button = chrome.find_element(By.CSS_SELECTOR, "li.slot button")
        assert button.size["height"] >= 44 and button.text == "Reservar este horario"
    finally:
        server.shutdown()
        services.close()
        peer.stop()
