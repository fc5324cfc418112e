"""The referral page identifies the patient from the server the referral came from: never from
the launch's server when the referral came from another one (the same `Patient/p1` there is
another person), live from the launch's server with the launch's token when nothing is stored,
and visibly "not identified" when the patient cannot be read, instead of a bare reference."""

from __future__ import annotations

import socket

from smart_harness import Harness

from referrals.model import Command, Referral, new_referral_id

BEHIND_GATEWAY = "http://ehr-behind-gateway.example/fhir"


def _open(h: Harness, origin: str, key: str, patient: str = "Patient/p1") -> Referral:
    draft = Referral(id=new_referral_id(), source_key=f"fhir|{origin}|ServiceRequest/{key}",
                     service_request=f"ServiceRequest/{key}", patient=patient,
                     requester="Practitioner/pr-smith", specialty="cardiology")
    return h.services.referrals.open(draft, Command("detect"))[0]


def _banner(html: str) -> str:
    start = html.index('aria-label="Patient"')
    return html[start:html.index("</section>", start)]


def test_the_patient_and_requester_come_from_the_referrals_own_server(harness: Harness):
    put = harness.services.resources.put
    put({"resourceType": "Patient", "id": "p1", "name": [{"text": "Wrong Person"}]},
        server=harness.ehr.fhir)
    put({"resourceType": "Patient", "id": "p1", "birthDate": "1957-04-02", "gender": "male",
         "name": [{"given": ["Robert"], "family": "Okafor"}],
         "identifier": [{"type": {"coding": [{"code": "MR"}]}, "value": "MRN-778"}]},
        server=BEHIND_GATEWAY)
    put({"resourceType": "ServiceRequest", "id": "sr-g", "status": "active",
         "intent": "order", "subject": {"reference": "Patient/p1"},
         "requester": {"reference": "Practitioner/pr-smith"}}, server=BEHIND_GATEWAY)
    put({"resourceType": "Practitioner", "id": "pr-smith",
         "name": [{"prefix": ["Dr."], "given": ["Jordan"], "family": "Smith"}]},
        server=BEHIND_GATEWAY)
    referral = _open(harness, BEHIND_GATEWAY, "sr-g")
    browser = harness.browser()
    start = harness.launch(browser)
    page = browser.get(f"{start.url}referrals/{referral.id}")
    assert page.status_code == 200
    banner = _banner(page.text)
    assert "Robert Okafor" in banner and "DOB 1957-04-02" in banner and "MRN MRN-778" in banner
    assert "Wrong Person" not in page.text
    assert 'title="Practitioner/pr-smith">Jordan Smith<' in page.text


def test_a_referral_from_the_launch_server_is_read_with_the_launch_token(harness: Harness):
    referral = _open(harness, harness.ehr.fhir, "sr-live")
    browser = harness.browser()
    start = harness.launch(browser)
    page = browser.get(f"{start.url}referrals/{referral.id}")
    assert "Ada Lovelace" in _banner(page.text)
    assert "GET /fhir/Patient/p1" in harness.ehr.requests


def test_a_patient_that_cannot_be_read_is_said_not_identified(harness: Harness):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/fhir"
    referral = _open(harness, dead, "sr-dead", patient="Patient/p9")
    browser = harness.browser()
    start = harness.launch(browser)
    page = browser.get(f"{start.url}referrals/{referral.id}")
    assert page.status_code == 200
    banner = _banner(page.text)
    assert "Patient not identified" in banner and 'role="alert"' in page.text
    assert "Patient/p9" in banner and dead in banner
    assert "<strong>Patient/p9</strong>" not in page.text
