"""The closed loop as the referral page shows it: a consult note the loop received appears under
"Appointment and consult note", and a no-show marked in the app tells the referring provider
which appointment was missed (the loop adapter wired as in production, a real database)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from joserfc.jwk import RSAKey
from smart_harness import CLIENT_ID, SCOPES, Harness, Served, smart_settings
from strict_ehr import StrictEhr

from loop.fhir import REFERRAL_SYSTEM
from loop.tables import updates
from referrals.model import Actor, Command, Referral, new_referral_id
from refloop.app import create_app
from refloop.services import build_services

COORD = Actor("Practitioner/coord-1", "Casey", "human")
SPECIALIST = "http://specialist.example/fhir"
#: every referral's referrer hears by email (kept as loop_updates rows; no mail is sent here)
LOOP = {"referrers": [{"name": "pcp", "servers": ["*"], "channel": "email",
                       "email": "pcp@example.org", "time_zone": "UTC"}]}


@pytest.fixture
def looped(database_url: str, tmp_path: Path, ehr: StrictEhr,
           app_key: tuple[Path, RSAKey]) -> Iterator[Harness]:
    key_file, key = app_key
    served = Served()
    settings = smart_settings(database_url, tmp_path, ehr, key_file, served.url)
    settings = dataclasses.replace(settings, sections={**settings.sections, "loop": LOOP})
    services = build_services(settings)
    served.app = create_app(services)
    ehr.register(CLIENT_ID, f"{served.url}/smart/callback", SCOPES,
                 jwks={"keys": [key.as_dict(private=False) | {"kid": "refloop-1"}]})
    yield Harness(ehr, services, served.url, key_file, logs=[])
    served.stop()
    services.close()


def _open(h: Harness, key: str, *actions: str) -> Referral:
    draft = Referral(id=new_referral_id(), source_key=f"t|ServiceRequest/{key}",
                     service_request=f"ServiceRequest/{key}", patient="Patient/p1",
                     specialty="cardiology", priority="routine", payer="Acme Health")
    referral, _ = h.services.referrals.open(draft, Command("detect"))
    for action in actions:
        referral = h.services.referrals.act(referral.id, Command(action, actor=COORD))
    return referral


def _section(html: str) -> str:
    """The "Appointment and consult note" section of the referral page."""
    found = re.search(r'<section aria-labelledby="appt-h">(.*?)</section>', html, re.S)
    assert found, html
    return found.group(1)


def test_a_note_the_loop_received_shows_on_the_referral_page(looped: Harness):
    referral = _open(looped, "sr-note", "accept")
    note = {"resourceType": "DocumentReference", "id": "note-1", "status": "current",
            "docStatus": "final", "subject": {"reference": "Patient/p1"},
            "context": {"related": [{"identifier": {"system": REFERRAL_SYSTEM,
                                                    "value": referral.id}}]}}
    done = looped.services.adapters["loop"].notes.apply_document(SPECIALIST, note,
                                                                 "subscription")
    assert done in ("close-loop", "link")
    browser = looped.browser()
    page = looped.launch(browser)
    section = _section(browser.get(f"{page.url}referrals/{referral.id}").text)
    assert "Consult note DocumentReference/note-1" in section
    assert "None yet." not in section


def test_a_no_show_marked_in_the_app_tells_the_referrer_the_appointment_date(looped: Harness):
    referral = _open(looped, "sr-miss", "accept")
    browser = looped.browser()
    page = looped.launch(browser)
    url = f"{page.url}referrals/{referral.id}"

    def act(form: dict[str, str]) -> None:
        html = browser.get(url).text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
        response = browser.post(f"{url}/act", data={"csrf_token": csrf, **form},
                                headers={"Origin": looped.url})
        assert response.status_code == 200, response.text

    act({"action": "schedule", "start": "2030-03-04T09:30"})
    act({"action": "no-show"})
    with looped.services.db.read() as c:
        told = dict(c.execute(sa.select(updates.c.milestone, updates.c.text).where(
            updates.c.referral_id == referral.id)).all())
    assert told["no-show"] == \
        "The patient did not attend the appointment on Mon 4 Mar 2030, 09:30 (UTC)."
    assert told["scheduled"] == "An appointment was booked for Mon 4 Mar 2030, 09:30 (UTC)."
    # the appointment is linked once, whatever path named it again
    current = looped.services.store.get(referral.id)
    assert len([o for o in current.outputs if o.is_a("Appointment")]) == 1
