"""A waitlist offer taken by SMS, end to end: sekmet-fhir as the EHR, Refloop served on
127.0.0.1 with outreach and scheduling wired, and THE TWILIO SANDBOX of the outreach adapter (a
fake SMS gateway: the real one cannot run here) carrying the offer to the patient and the
patient's "YES" back through the signed webhook.

"YES" is also one of outreach's booking words; the offer's reply context must bring it to
scheduling's reply hook first (outreach: opt-out/HELP, then the hooks, then its own handling),
so the patient gets the earlier slot, not a new booking link."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from calendar_data import Calendar, Sekmet, create, destination, make_calendar, put
from sched_world import messages
from werkzeug.serving import make_server

from referrals.model import Command, Referral, new_referral_id
from referrals.worker import Worker
from refloop.app import create_app
from refloop.services import build_services
from refloop.settings import Settings
from refloop.wiring import all_handlers
from scheduling.adapter import PATIENT

pytestmark = pytest.mark.integration



#: (state, time zone, mobile) of the places the patient may live in
PATIENT_PLACES = (("NY", "America/New_York", "+12125550177"),
                  ("HI", "Pacific/Honolulu", "+18085550177"),
                  ("GU", "Pacific/Guam", "+16715550177"))


def sending_time() -> tuple[datetime, str, str]:
    """A moment within the next hours (scheduling dates the offer's 12-hour expiry by the real
    clock) that is daytime for the patient, with the patient's state and mobile: New York,
    Honolulu or Guam, whichever has daytime first (one of them always does within 8 hours: the
    three zones' days, 10:00 to 19:00, leave no 8-hour gap in UTC)."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    for hours in range(8):
        moment = now + timedelta(hours=hours)
        for state, zone, mobile in PATIENT_PLACES:
            if 10 <= moment.astimezone(ZoneInfo(zone)).hour < 19:
                return moment, state, mobile
    raise AssertionError("no daytime in New York, Honolulu or Guam within 8 hours")


START, STATE, MOBILE = sending_time()


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Served:
    services: Any
    calendar: Calendar
    twilio: Any

    def settle(self) -> None:
        """Run due work and the sandbox's callbacks until both are quiet."""
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
def served(sqlite_url: str, tmp_path: Path, sekmet: Sekmet) -> Iterator[Served]:
    from outreach.sandbox import SandboxRules, TwilioSandbox

    calendar = make_calendar(sekmet.base, slots=4, first=START + timedelta(days=14))
    twilio = TwilioSandbox(rules=SandboxRules()).start()
    server = make_server("127.0.0.1", 0, lambda e, s: [], threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    twilio.rules.inbound_url = f"{url}/outreach/twilio/sms"
    outreach = {"practice_name": "Springfield Heart Clinic", "practice_phone": "+15555550100",
                "coordinator_line": "+15555550101", "public_base_url": url,
                "twilio": {"account_sid": twilio.account_sid, "auth_token": twilio.auth_token,
                           "from_number": "+15005550006", "api_base_url": twilio.url}}
    settings = Settings(var_dir=tmp_path / "var", database_url=sqlite_url, public_base_url=url,
                        sections={"outreach": outreach, "scheduling": {
                            "search_days": 3000, "destinations": [destination(calendar)]}})
    services = build_services(settings)
    clock = Clock()
    services.work.clock = clock
    services.adapters["outreach"].clock = clock
    twilio.clock = clock
    server.app = create_app(services)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Served(services, calendar, twilio)
    server.shutdown()
    thread.join()
    services.close()
    twilio.stop()


def referral_for_mobile(served: Served) -> Referral:
    calendar, services = served.calendar, served.services
    patient = calendar.read(f"Patient/{calendar.patient}")
    patient["telecom"] = [{"system": "phone", "value": MOBILE, "use": "mobile", "rank": 1}]
    patient["address"] = [{"use": "home", "state": STATE, "country": "US"}]
    services.resources.put(patient, server=calendar.base)
    draft = Referral(id=new_referral_id(),
                     source_key=f"fhir|{calendar.base}|ServiceRequest/sr-offer",
                     service_request="ServiceRequest/sr-offer",
                     patient=f"Patient/{calendar.patient}", specialty="cardiology")
    referral, _ = services.referrals.open(draft, Command("detect", at=START))
    return services.referrals.act(referral.id, Command("accept", at=START))


def free_on_the_ehr(served: Served, slot_key: str) -> None:
    """Somebody booked at the clinic cancels: the EHR's Appointment and Slot say so."""
    base = served.calendar.base
    slot = served.calendar.read(slot_key)
    theirs = create(base, {"resourceType": "Appointment", "status": "booked",
                           "slot": [{"reference": slot_key}], "start": slot["start"],
                           "end": slot["end"], "participant": [
                               {"actor": {"reference": "Patient/someone"},
                                "status": "accepted"}]})
    put(base, {**slot, "status": "busy"})
    cancelled = put(base, {**theirs, "status": "cancelled"})
    put(base, {**served.calendar.read(slot_key), "status": "free"})
    served.services.work.enqueue("scheduling.appointment",
                                 {"server": base, "resources": [cancelled]},
                                 key=f"test:cancelled:{cancelled['id']}")


@pytest.mark.parametrize("reminded_since", [False, True], ids=["offer-last", "reminder-last"])
def test_yes_to_a_waitlist_offer_by_sms_books_the_earlier_slot(served: Served,
                                                                reminded_since: bool) -> None:
    """reminder-last: a reminder went out after the offer, so the YES answers the reminder's
    context; the open offer is still what it accepts."""
    scheduling = served.services.adapters["scheduling"]
    calendar = served.calendar
    referral = referral_for_mobile(served)
    served.settle()
    later = scheduling.booker.book(referral.id, calendar.slots[3], PATIENT).booked
    assert later is not None
    scheduling.waitlist.join(referral.id, "cardiology", later.id, later.start)
    served.settle()
    sent_before = len(served.texts())

    free_on_the_ehr(served, calendar.slots[0])
    served.settle()
    offer = served.texts()[-1]
    assert len(served.texts()) == sent_before + 1 and "Reply YES" in offer

    if reminded_since:
        served.services.work.enqueue("outreach.message", {
            "referral_id": referral.id, "purpose": "reminder",
            "params": {"when": "later", "location": "Heart Clinic", "link": "-"},
            "reply_context": f"scheduling:appointment:{later.id}"},
            key=f"outreach.message:{referral.id}:reminder:test")
        served.settle()
        assert "Reply C to confirm" in served.texts()[-1]

    served.twilio.reply(MOBILE, "YES")
    served.settle()
    moved = scheduling.book.current(referral.id)
    assert moved.slots == [calendar.slots[0]]  # the offer was taken, by scheduling's hook
    assert calendar.read(calendar.slots[0])["status"] == "busy"
    assert calendar.read(calendar.slots[3])["status"] == "free"  # the old one released
    # outreach's own booking intent did not act on it: no new booking link, no task
    assert messages(served.services.work, served.services, "booking-link") == []
    assert served.services.tasks.open_for(referral.id) == []
