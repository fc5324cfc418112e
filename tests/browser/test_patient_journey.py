"""The patient's whole journey in headless Chromium at 375x667 (a phone), against sekmet-fhir
as the EHR, with axe-core finding no serious or critical violation on any page:

the SMS from outreach's first contact with our booking link, a wrong date of birth
(refused), the right one, the slots, booking (the Appointment on the EHR), the confirmation with
its .ics, the reminder on a fake clock, the reply C, the visit marked noshow on the EHR, the
recovery message with a new link, and rebooking. Also: the pages fit 320 px without sideways
scrolling, and read in Spanish for a Spanish-speaking patient.

The texts go through the outreach adapter to its Twilio sandbox (a fake SMS gateway, since the
real one cannot run here), and the patient's reply C comes back through its signed webhook; the
work queue and outreach run on a fake clock (2030), so the reminder is due when the test says.
"""

from __future__ import annotations

import base64
import re
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
from waits import click_and_wait

from referrals.model import Command, Referral, Stage, new_referral_id
from refloop.app import create_app
from refloop.services import build_services
from refloop.settings import Settings

#: Tuesday 2030-03-05 15:00 UTC (10:00 in New York): the clock outreach and the work queue use
START = datetime(2030, 3, 5, 15, 0, tzinfo=UTC)
MOBILE = "+12125550123"


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Journey:
    services: Any
    calendar: Any
    twilio: Any
    clock: Clock

    def settle(self) -> None:
        """Run due work and the SMS gateway's callbacks until both are quiet."""
        from referrals.worker import Worker
        from refloop.wiring import all_handlers

        worker = Worker(self.services.work, all_handlers(self.services))
        for _ in range(50):
            done = worker.drain()
            self.twilio.wait_idle()
            if not done and not worker.drain():
                return
        raise AssertionError("work did not settle")

    def texts(self) -> list[str]:
        return [r.body for r in self.twilio.messages(to=MOBILE)]


@pytest.fixture
def journey(sqlite_url: str, tmp_path: Path) -> Any:
    """sekmet-fhir as the EHR, THE TWILIO SANDBOX of the outreach adapter (a fake SMS gateway:
    the real one cannot run here) and aiosmtpd, Refloop served on http://localhost."""
    from outreach.sandbox import MailCapture, SandboxRules, TwilioSandbox

    peer = start_sekmet(tmp_path / "ehr")
    calendar = make_calendar(peer.base, slots=8, first=START + timedelta(days=14))
    twilio, mail = TwilioSandbox(rules=SandboxRules()).start(), MailCapture().start()
    probe = make_server("127.0.0.1", 0, lambda e, s: [])
    port = probe.server_port
    probe.server_close()
    url = f"http://localhost:{port}"
    twilio.rules.inbound_url = f"{url}/outreach/twilio/sms"
    outreach = {"practice_name": "Springfield Heart Clinic", "practice_phone": "+15555550100",
                "coordinator_line": "+15555550101", "public_base_url": url,
                "twilio": {"account_sid": twilio.account_sid, "auth_token": twilio.auth_token,
                           "from_number": "+15005550006", "api_base_url": twilio.url},
                "smtp": {"host": "127.0.0.1", "port": mail.port, "security": "none",
                         "from_address": "clinic@refloop.test"}}
    settings = Settings(var_dir=tmp_path / "var", database_url=sqlite_url, public_base_url=url,
                        sections={"outreach": outreach, "scheduling": {
                            "search_days": 3000, "destinations": [destination(calendar)]}})
    services = build_services(settings)
    clock = Clock()
    services.work.clock = clock
    services.adapters["outreach"].clock = clock
    twilio.clock = clock
    server = make_server("127.0.0.1", port, create_app(services), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Journey(services, calendar, twilio, clock)
    server.shutdown()
    services.close()
    twilio.stop()
    mail.stop()
    peer.stop()


def open_for_outreach(services: Any, calendar: Any, at: datetime) -> Any:
    """A referral from the EHR, accepted (which starts outreach), for a patient with a mobile."""
    patient = calendar.read(f"Patient/{calendar.patient}")
    patient["telecom"] = [{"system": "phone", "value": MOBILE, "use": "mobile", "rank": 1}]
    patient["address"] = [{"use": "home", "state": "NY", "country": "US"}]
    services.resources.put(patient, server=calendar.base)
    draft = Referral(id=new_referral_id(),
                     source_key=f"fhir|{calendar.base}|ServiceRequest/sr-journey",
                     service_request="ServiceRequest/sr-journey",
                     patient=f"Patient/{calendar.patient}", specialty="cardiology")
    referral, _ = services.referrals.open(draft, Command("detect", at=at))
    return services.referrals.act(referral.id, Command("accept", at=at))


def link_in(text: str) -> str:
    found = re.search(r"(http://localhost:\d+/p/[A-Za-z0-9_-]+)", text)
    assert found is not None, text
    return found.group(1)


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
    click_and_wait(chrome, button)


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


def test_whole_patient_journey_on_a_phone(chrome: Any, journey: Journey) -> None:
    from selenium.webdriver.common.by import By

    services, calendar, clock = journey.services, journey.calendar, journey.clock
    scheduling = services.adapters["scheduling"]
    chrome.set_window_size(375, 667)
    seen: list[str] = []
    referral = open_for_outreach(services, calendar, clock.now)
    journey.settle()
    [first_contact] = journey.texts()  # outreach's ladder, with our booking link
    assert "/p/" in first_contact
    sign_in(chrome, link_in(first_contact), seen)
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
    journey.settle()
    assert len(journey.texts()) == 2  # the confirmation went out by SMS
    assert "your visit is booked" in journey.texts()[1]
    chrome.get(link_in(journey.texts()[1]))  # its link works too
    check(chrome, seen)

    row = scheduling.book.current(referral.id)
    first_due = scheduling.reminders.of_appointment(row.id)[0]["due_at"]
    clock.now = first_due + timedelta(minutes=1)  # the fake clock: a week before the visit
    assert scheduling.send_due_reminders(clock.now) == 1
    journey.settle()
    reminder = journey.texts()[-1]
    assert len(journey.texts()) == 3 and "Reply C to confirm or R to reschedule" in reminder
    journey.twilio.reply(MOBILE, "C")  # the patient confirms by SMS
    journey.settle()
    assert scheduling.book.current(referral.id).confirmed_at is not None
    chrome.get(link_in(reminder).split("/p/")[0] + "/p/home")
    assert "You confirmed this appointment." in chrome.page_source

    put(calendar.base, {**calendar.read(f"Appointment/{appointment['id']}"),
                        "status": "noshow"})
    clock.now = row.start + timedelta(hours=3)
    assert scheduling.check_visits(clock.now) == 1  # the poll reads the EHR: noshow
    assert services.store.get(referral.id).stage == Stage.NO_SHOW
    journey.settle()
    recovery = journey.texts()[-1]
    assert len(journey.texts()) == 4 and "we missed you" in recovery
    chrome.delete_all_cookies()
    sign_in(chrome, link_in(recovery), seen)
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
