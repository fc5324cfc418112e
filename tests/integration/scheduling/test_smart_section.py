"""The Scheduling section of the referral page, through the launched SMART app (strict EHR) with
a scheduling destination whose calendar is on sekmet-fhir: the appointment, reminders and links
shown; the coordinator books on the patient's behalf with the same slot search; a locked patient
link is flagged and a new link sent."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.append(str(Path(__file__).resolve().parents[1] / "smart"))

from calendar_data import destination, make_calendar, start_sekmet
from joserfc.jwk import RSAKey
from smart_harness import CLIENT_ID, SCOPES, Harness, Served, smart_settings
from strict_ehr import StrictEhr

from referrals.model import Command, Referral, Stage, new_referral_id
from refloop.app import create_app
from refloop.services import build_services


@pytest.fixture
def booked_harness(database_url: str, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    ehr = StrictEhr().start()
    ehr.add({"resourceType": "Practitioner", "id": "coord-1",
             "name": [{"given": ["Casey"], "family": "Coordinator"}]})
    peer = start_sekmet(tmp_path / "calendar")
    calendar = make_calendar(peer.base, slots=3)
    key = RSAKey.generate_key(2048, parameters={"kid": "refloop-1"})
    key_file = tmp_path / "smart-key.pem"
    key_file.write_bytes(key.as_pem(private=True))
    served = Served()  # listening first: the app's public URL is its own address
    url = served.url
    settings = smart_settings(database_url, tmp_path, ehr, key_file, url)
    settings.sections["scheduling"] = {"destinations": [destination(calendar)]}
    services = build_services(settings)
    served.app = create_app(services)
    ehr.register(CLIENT_ID, f"{url}/smart/callback", SCOPES,
                 jwks={"keys": [key.as_dict(private=False) | {"kid": "refloop-1"}]})
    yield Harness(ehr, services, url, key_file), calendar
    served.stop()
    services.close()
    peer.stop()
    ehr.stop()


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def test_coordinator_books_for_the_patient_and_sees_the_appointment(booked_harness: Any
                                                                     ) -> None:
    harness, calendar = booked_harness
    services = harness.services
    services.resources.put(calendar.read(f"Patient/{calendar.patient}"), server=calendar.base)
    draft = Referral(id=new_referral_id(),
                     source_key=f"fhir|{calendar.base}|ServiceRequest/sr-coord",
                     service_request="ServiceRequest/sr-coord",
                     patient=f"Patient/{calendar.patient}", specialty="cardiology")
    referral = services.referrals.act(services.referrals.open(draft, Command("detect"))[0].id,
                                      Command("accept"))
    scheduling = services.adapters["scheduling"]
    token = scheduling.issue_booking_link(referral.id).rsplit("/", 1)[1]
    for _ in range(5):
        scheduling.links.check(token, False, "10.1.1.1")
    browser = harness.browser()
    worklist = harness.launch(browser)
    page_url = f"{worklist.url}referrals/{referral.id}"
    page = browser.get(page_url)
    assert "No appointment booked" in page.text and "link is locked" in page.text
    sent = browser.post(f"{page_url}/scheduling-link", data={"csrf_token": _csrf(page.text)},
                        headers={"Origin": harness.url})
    assert sent.status_code == 200
    assert len(scheduling.links.for_referral(referral.id)) == 2
    assert "link is locked" not in sent.text  # the locked one is revoked now
    slots = browser.get(f"{page_url}/slots")
    assert slots.status_code == 200 and "Book on the patient" in slots.text
    keys = re.findall(r'name="slot" value="([^"]+)"', slots.text)
    assert keys == calendar.slots
    refused = browser.post(f"{page_url}/book", data={"csrf_token": _csrf(slots.text),
                                                      "slot": keys[2]})
    assert refused.status_code == 403  # no Origin: not from the app's own pages
    done = browser.post(f"{page_url}/book", data={"csrf_token": _csrf(slots.text),
                                                   "slot": keys[2]},
                        headers={"Origin": harness.url})
    assert done.status_code == 200 and "Done: Record appointment" in done.text
    assert services.store.get(referral.id).stage == Stage.SCHEDULED
    assert calendar.read(keys[2])["status"] == "busy"
    row = scheduling.book.current(referral.id)
    assert row.booked_by == "Practitioner/coord-1"
    assert "Heart Clinic, 12 Elm Street" in done.text
    assert "reminder 7 d before: planned" in done.text
    # the scheduling adapter's 'Appointment' link is the page's appointment too (any case)
    start = calendar.read(f"Appointment/{row.appointment_id}")["start"]
    assert f"<li>Appointment {start} (booked)</li>" in done.text
    again = browser.post(f"{page_url}/book", data={"csrf_token": _csrf(slots.text),
                                                    "slot": keys[2]},
                         headers={"Origin": harness.url})
    assert "error=taken" in again.url and "Somebody else booked" in again.text
