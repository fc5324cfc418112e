"""The referral page shows what the PAS adapter adds (the wiring's referral details): a
prior-authorization request in error and the payer reply it could not read, as received;
whether authorization is required and the eligibility answer; and a referral waiting for an
authorization nobody has requested yet offers the request."""

from __future__ import annotations

import re

import sqlalchemy as sa
from smart_harness import Harness

from pas_client.flow import new_request
from pas_client.response import from_claim_response
from referrals.model import Actor, Command, Referral, new_referral_id
from referrals.store.schema import work_items

COORD = Actor("Practitioner/coord-1", "Casey", "human")
GARBLED = b'{"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "ClaimRes'


def test_the_page_shows_the_request_in_error_and_the_raw_reply(harness: Harness) -> None:
    draft = Referral(id=new_referral_id(), source_key="t|ServiceRequest/pa-raw",
                     service_request="ServiceRequest/pa-raw", patient="Patient/p1",
                     payer="Acme Health")
    referral, _ = harness.services.referrals.open(draft, Command("detect"))
    harness.services.referrals.act(referral.id, Command("accept", actor=COORD))
    store = harness.services.adapters["pas"].store
    request = new_request("req-raw-1", referral.id, "Acme Health", "submit", "req-raw-1", None,
                          1, {}, "b-raw-1", "C1", "error", [])
    store.add(request)
    reply_id = store.add_reply(payer="Acme Health", operation="submit", status=200,
                               headers={"Content-Type": "application/fhir+json"}, body=GARBLED,
                               request_id=request.id, referral_id=referral.id)
    store.interpret_reply(reply_id, "uninterpretable", "the reply is not JSON")
    store.update(request.id, last_error=f"the payer's reply (#{reply_id}) could not be "
                 "interpreted")
    browser = harness.browser()
    page = harness.launch(browser)
    text = browser.get(f"{page.url}referrals/{referral.id}").text
    assert "req-raw-" in text and "uninterpretable" in text
    assert f"the payer&#39;s reply (#{reply_id}) could not be interpreted" in text
    assert f"Payer replies #{reply_id} as received" in text
    assert "application/fhir+json" in text and "ClaimRes" in text


def test_the_page_shows_whether_authorization_is_required_and_the_eligibility(
        harness: Harness) -> None:
    draft = Referral(id=new_referral_id(), source_key="t|ServiceRequest/pa-cov",
                     service_request="ServiceRequest/pa-cov", patient="Patient/p1",
                     payer="Acme Health")
    referral, _ = harness.services.referrals.open(draft, Command("detect"))
    harness.services.adapters["pas"].store.save_coverage(
        referral.id, "Acme Health", "required", "Acme Health CRD (order-sign): covered "
        "covered, pa-needed auth-needed", {"crd": {"cards": [
            {"summary": "Prior authorization needed", "indicator": "info", "source": "x"}]}},
        {"active": True, "plan": "Gold PPO", "in_network": False, "auth_required": True,
         "errors": []})
    browser = harness.browser()
    page = harness.launch(browser)
    text = browser.get(f"{page.url}referrals/{referral.id}").text
    assert "Coverage and eligibility" in text
    assert "required (Acme Health CRD (order-sign): covered covered, pa-needed auth-needed)" \
        in text
    assert "coverage active, plan Gold PPO, out of network, authorization required" in text
    assert "Prior authorization needed" in text


def test_a_referral_waiting_for_a_required_authorization_offers_the_request(
        harness: Harness) -> None:
    """The coverage check moved it to auth-pending (authorization required) before anyone
    asked: the page still offers to request it, and the request queues the PAS work."""
    draft = Referral(id=new_referral_id(), source_key="t|ServiceRequest/pa-req",
                     service_request="ServiceRequest/pa-req", patient="Patient/p1",
                     payer="Acme Health")
    referral, _ = harness.services.referrals.open(draft, Command("detect"))
    harness.services.referrals.act(referral.id, Command("accept", actor=COORD))
    harness.services.referrals.act(referral.id, Command(
        "request-authorization", changes={"auth_state": "required"}))
    harness.services.adapters["smart"].pas_enabled = True
    browser = harness.browser()
    page = harness.launch(browser)
    url = f"{page.url}referrals/{referral.id}"
    html = browser.get(url).text
    assert 'value="request-authorization"' in html
    token = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert token is not None
    response = browser.post(f"{url}/act", data={"csrf_token": token.group(1),
                                                "action": "request-authorization"},
                            headers={"Origin": harness.url})
    assert response.status_code == 200, response.text
    current = harness.services.store.get(referral.id)
    assert current.stage.value == "auth-pending" and current.auth_state == "requested"
    with harness.services.db.read() as c:
        kinds = list(c.execute(sa.select(work_items.c.kind).where(
            work_items.c.kind == "pas.submit")).scalars())
    assert kinds == ["pas.submit"]


def test_the_page_shows_why_a_claim_response_rejected_the_request(harness: Harness) -> None:
    """HTTP 200 with a ClaimResponse that holds errors instead of a decision: the payer's error
    code, its words and the disposition are the reason on the referral's timeline."""
    draft = Referral(id=new_referral_id(), source_key="t|ServiceRequest/pa-err",
                     service_request="ServiceRequest/pa-err", patient="Patient/p1",
                     payer="Acme Health")
    referral, _ = harness.services.referrals.open(draft, Command("detect"))
    harness.services.referrals.act(referral.id, Command("accept", actor=COORD))
    flow = harness.services.adapters["pas"]
    request = new_request("req-err-1", referral.id, "Acme Health", "submit", "req-err-1", None,
                          1, {}, "b-err-1", "C1", "submitted", [])
    flow.store.add(request)
    flow.apply_decision(request, from_claim_response({
        "resourceType": "ClaimResponse", "outcome": "error", "disposition": "Member not found",
        "error": [{"code": {"coding": [{"system": "https://codesystem.x12.org/005010/901",
                                        "code": "75", "display": "Subscriber not found"}]}}]}),
        "submit", 200)
    browser = harness.browser()
    page = harness.launch(browser)
    text = browser.get(f"{page.url}referrals/{referral.id}").text
    assert ("(Acme Health answered with errors instead of a decision: error 75 Subscriber not "
            "found; Member not found; correct what it names and request prior authorization "
            "again)") in text
