"""Worklist, referral page and actions through the launched app (strict EHR, real database):
CSRF and Origin checks, lifecycle-only changes, illegal actions explained, AuditEvents."""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa
from smart_harness import Harness

from referrals.model import Actor, Command, Referral, Stage, new_referral_id
from referrals.store.schema import resources, work_items
from refloop.demo_data import demo_resources

COORD = Actor("Practitioner/coord-1", "Casey", "human")


def _open(h: Harness, key: str, *, specialty: str = "cardiology", priority: str = "routine",
          patient: str = "Patient/p1", actions: tuple[str, ...] = (),
          origin: str = "t") -> Referral:
    draft = Referral(id=new_referral_id(), source_key=f"{origin}|ServiceRequest/{key}",
                     service_request=f"ServiceRequest/{key}", patient=patient,
                     specialty=specialty, priority=priority, payer="Acme Health")
    referral, _ = h.services.referrals.open(draft, Command("detect"))
    for action in actions:
        referral = h.services.referrals.act(referral.id, Command(action, actor=COORD))
    return referral


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _post(h: Harness, browser, page_url: str, html: str, form: dict[str, str], **headers):
    url = page_url.split("?")[0] + "/act"
    data = {"csrf_token": _csrf(html), **form}
    return browser.post(url, data=data, headers={"Origin": h.url, **headers})


def _audits(h: Harness) -> list[dict]:
    with h.services.db.read() as c:
        return list(c.execute(sa.select(resources.c.body).where(
            resources.c.resource_type == "AuditEvent", resources.c.server == "local")).scalars())


def test_worklist_filters_and_opens_a_referral_and_accepts_it(harness: Harness):
    cardio = _open(harness, "sr-1", specialty="cardiology", priority="urgent")
    _open(harness, "sr-2", specialty="dermatology")
    browser = harness.browser()
    page = harness.launch(browser)
    assert "cardiology" in page.text and "dermatology" in page.text
    filtered = browser.get(page.url, params={"specialty": "cardiology", "priority": "urgent"})
    assert "cardiology" in filtered.text and "dermatology" not in filtered.text
    detail_url = f"{page.url}referrals/{cardio.id}"
    detail = browser.get(detail_url)
    assert detail.status_code == 200 and "Accept" in detail.text
    done = _post(harness, browser, detail_url, detail.text,
                 {"action": "accept", "version": str(cardio.version)})
    assert done.status_code == 200 and "Done: Accept" in done.text
    assert harness.services.store.get(cardio.id).stage == Stage.ACCEPTED
    events = harness.services.store.events(cardio.id)
    assert events[-1].action == "accept" and events[-1].actor.reference == \
        "Practitioner/coord-1" and events[-1].source == "smart-app"


def test_action_without_csrf_token_or_from_another_origin_is_refused(harness: Harness):
    referral = _open(harness, "sr-3")
    browser = harness.browser()
    page = harness.launch(browser)
    url = f"{page.url}referrals/{referral.id}"
    html = browser.get(url).text
    no_token = browser.post(url + "/act", data={"action": "accept"},
                            headers={"Origin": harness.url})
    assert no_token.status_code == 403
    foreign = _post(harness, browser, url, html, {"action": "accept"},
                    Origin="http://evil.example")
    assert foreign.status_code == 403
    no_origin = browser.post(url + "/act", data={"action": "accept", "csrf_token": _csrf(html)})
    assert no_origin.status_code == 403
    assert harness.services.store.get(referral.id).stage == Stage.DETECTED


def test_illegal_action_shows_the_lifecycle_explanation(harness: Harness):
    referral = _open(harness, "sr-4")
    browser = harness.browser()
    page = harness.launch(browser)
    url = f"{page.url}referrals/{referral.id}"
    response = _post(harness, browser, url, browser.get(url).text, {"action": "no-show"})
    assert response.status_code == 409
    assert "a no-show needs a scheduled appointment" in response.text


def test_stale_page_is_a_conflict_not_a_silent_overwrite(harness: Harness):
    referral = _open(harness, "sr-5")
    browser = harness.browser()
    page = harness.launch(browser)
    url = f"{page.url}referrals/{referral.id}"
    html = browser.get(url).text
    harness.services.referrals.act(referral.id, Command("triage", actor=COORD))
    response = _post(harness, browser, url, html, {"action": "accept",
                                                  "version": str(referral.version)})
    assert response.status_code == 409 and "Someone else changed" in response.text


def test_full_path_with_outreach_appointment_no_show_and_closed_loop(harness: Harness):
    referral = _open(harness, "sr-6")
    browser = harness.browser()
    page = harness.launch(browser)
    url = f"{page.url}referrals/{referral.id}"

    def act(form: dict[str, str]) -> str:
        response = _post(harness, browser, url, browser.get(url).text, form)
        assert response.status_code == 200, response.text
        return response.text

    act({"action": "take"})
    assert harness.services.store.get(referral.id).owner == "Practitioner/coord-1"
    act({"action": "accept"})
    text = act({"action": "record-outreach", "channel": "phone", "outcome": "no-answer",
                "note": "voicemail full"})
    assert "no-answer" in text and "Outreach attempts (1)" in text
    act({"action": "schedule", "start": "2030-03-04T09:30", "location": "Clinic B"})
    current = harness.services.store.get(referral.id)
    assert current.stage == Stage.SCHEDULED
    appointment = next(link for link in current.outputs if link.is_a("Appointment"))
    stored = harness.services.resources.try_get("Appointment",
                                                appointment.reference.split("/")[1])
    assert stored["start"].startswith("2030-03-04T09:30")
    act({"action": "no-show"})
    act({"action": "schedule", "start": "2030-03-11T09:30"})
    act({"action": "complete-visit"})
    assert harness.services.store.get(referral.id).stage == Stage.VISIT_COMPLETED
    text = act({"action": "close-loop", "note_text": "Seen; echo normal."})
    current = harness.services.store.get(referral.id)
    assert current.stage == Stage.LOOP_CLOSED
    note = next(link for link in current.outputs if link.is_a("DocumentReference"))
    assert harness.services.resources.try_get("DocumentReference", note.reference.split("/")[1])
    assert "finished; no actions remain" in text
    actions = [e.action for e in harness.services.store.events(referral.id)]
    assert actions == ["detect", "assign", "accept", "start-outreach", "record-outreach",
                       "schedule", "no-show", "schedule", "complete-visit", "close-loop"]


def test_decline_and_hold_need_a_reason(harness: Harness):
    referral = _open(harness, "sr-7", actions=("accept",))
    browser = harness.browser()
    page = harness.launch(browser)
    url = f"{page.url}referrals/{referral.id}"
    missing = _post(harness, browser, url, browser.get(url).text, {"action": "hold"})
    assert missing.status_code == 400 and "needs a reason" in missing.text
    held = _post(harness, browser, url, browser.get(url).text,
                 {"action": "hold", "reason_code": "waiting-info", "reason_text": "labs"})
    assert held.status_code == 200
    assert harness.services.store.get(referral.id).stage == Stage.ON_HOLD
    resumed = _post(harness, browser, url, browser.get(url).text, {"action": "resume"})
    assert resumed.status_code == 200
    assert harness.services.store.get(referral.id).stage == Stage.ACCEPTED


def test_wiring_enables_prior_authorization_only_with_a_pas_submit_handler(harness: Harness):
    from refloop.wiring import all_handlers

    expected = "pas.submit" in all_handlers(harness.services)
    assert harness.services.adapters["smart"].pas_enabled is expected


def test_prior_authorization_is_disabled_without_a_pas_handler(harness: Harness):
    referral = _open(harness, "sr-8", actions=("accept",))
    harness.services.adapters["smart"].pas_enabled = False
    browser = harness.browser()
    page = harness.launch(browser)
    url = f"{page.url}referrals/{referral.id}"
    html = browser.get(url).text
    assert "no PAS client is configured" in html and "disabled" in html
    response = _post(harness, browser, url, html, {"action": "request-authorization"})
    assert response.status_code == 400
    assert harness.services.store.get(referral.id).stage == Stage.ACCEPTED
    with harness.services.db.read() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(work_items).where(
            work_items.c.kind == "pas.submit")).scalar() == 0


def test_prior_authorization_enqueues_pas_work_when_a_handler_exists(harness: Harness):
    referral = _open(harness, "sr-9", actions=("accept",))
    browser = harness.browser()
    page = harness.launch(browser)
    harness.services.adapters["smart"].pas_enabled = True
    url = f"{page.url}referrals/{referral.id}"
    response = _post(harness, browser, url, browser.get(url).text,
                     {"action": "request-authorization"})
    assert response.status_code == 200, response.text
    current = harness.services.store.get(referral.id)
    assert current.stage == Stage.AUTH_PENDING and current.auth_state == "requested"
    with harness.services.db.read() as c:
        item = c.execute(sa.select(work_items).where(work_items.c.kind == "pas.submit")
                         ).mappings().one()
    assert item["payload"] == {"referral_id": referral.id, "payer": "Acme Health"}
    assert item["idempotency_key"] == f"pas.submit:{referral.id}:{current.version}"


def test_referral_page_shows_request_patient_coverage_timeline_and_auth_task(harness: Harness):
    item = {"key": "demo-1", "priority": "urgent", "code": "183519002",
            "display": "Referral to cardiology service",
            "reason": {"code": "I48.91", "display": "Atrial fibrillation"},
            "requester": {"npi": "1234567890", "name": "Dr. Rivera"},
            "patient": {"mrn": "MRN-77", "family": "Okafor", "given": "Grace",
                        "gender": "female", "birthDate": "1961-05-02"},
            "payer": {"name": "Acme Health", "id": "acme", "member": "M-1"}}
    for resource in demo_resources(item).values():
        harness.services.resources.put(resource, server="demo")
    referral = _open(harness, "demo-1", patient="Patient/demo-1", actions=("accept",),
                     origin="demo")
    harness.services.resources.put({
        "resourceType": "Task", "id": "pa-1", "status": "completed",
        "partOf": [{"reference": f"Task/{referral.id}"}],
        "businessStatus": {"text": "approved"},
        "statusReason": {"text": "meets criteria"}}, server="local")
    browser = harness.browser()
    page = harness.launch(browser)
    detail = browser.get(f"{page.url}referrals/{referral.id}")
    text = detail.text
    for expected in ("Referral to cardiology service", "Atrial fibrillation", "Dr. Rivera",
                     "Grace Okafor", "MRN-77", "Acme Health", "member M-1",
                     "Task pa-1: completed, decision approved: meets criteria",
                     "detect", "accept"):
        assert expected in text, expected


def test_banner_hidden_when_the_ehr_shows_its_own(harness: Harness):
    referral = _open(harness, "sr-10")
    harness.ehr.modes.need_patient_banner = False
    browser = harness.browser()
    page = harness.launch(browser, patient="p1")
    detail = browser.get(f"{page.url}referrals/{referral.id}")
    assert 'class="banner"' not in detail.text


def test_every_view_of_patient_data_writes_an_audit_event(harness: Harness):
    referral = _open(harness, "sr-11")
    browser = harness.browser()
    page = harness.launch(browser, patient="p1")
    before = len(_audits(harness))
    browser.get(f"{page.url}referrals/{referral.id}")
    events = _audits(harness)
    assert len(events) == before + 1
    read = next(e for e in events if e["subtype"][0]["code"] == "read")
    assert read["agent"][0]["who"]["reference"] == "Practitioner/coord-1"
    patient = [e for e in read["entity"] if e.get("role", {}).get("code") == "1"]
    assert patient[0]["what"]["reference"] == "Patient/p1"
    assert any(e["what"]["reference"] == f"Task/{referral.id}" for e in read["entity"]
               if "what" in e)
    searches = [e for e in events if e["subtype"][0]["code"] == "search"]
    assert searches and searches[0]["action"] == "E"


def test_keyset_paging_walks_every_referral_once(harness: Harness):
    made = [_open(harness, f"pg-{i}", patient=f"Patient/x{i}") for i in range(7)]
    from referrals.worklist import WorklistFilter, fetch_page

    seen, cursor = [], None
    while True:
        page = fetch_page(harness.services.db, WorklistFilter(), after=cursor, limit=3)
        seen += [r.id for r in page.rows]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(r.id for r in made)


def test_dashboard_renders_svg_funnel_and_aging_without_external_assets(harness: Harness):
    _open(harness, "d-1", actions=("accept",))
    _open(harness, "d-2")
    browser = harness.browser()
    page = harness.launch(browser)
    dash = browser.get(f"{page.url}dashboard")
    assert dash.status_code == 200
    # the outcomes dashboard (analytics is wired): funnel, cohorts and four distributions
    assert dash.text.count("<svg") == 6
    assert "detected: 2 (100%)" in dash.text and "accepted: 1 (50%)" in dash.text
    assert "http://" not in dash.text.split("<main", 1)[1]
    assert "https://" not in dash.text


def test_a_v2_referral_page_shows_the_coverage_from_in1(harness: Harness):
    """A REF^I12 through the HL7 bridge: its IN1 Coverage (payer, member id, subscriber,
    group) is on the referral page, read from the sender's resources."""
    from referrals.worker import Worker
    from refloop.wiring import all_handlers

    raw = (Path(__file__).resolve().parents[3] / "fixtures" / "hl7v2" /
           "authored__bench_REF_I12_v251_21seg.hl7").read_bytes()
    intake = harness.services.adapters["hl7"].intake
    intake.store([intake.assess_frame(raw)])
    handlers = {k: v for k, v in all_handlers(harness.services).items() if k == "hl7.message"}
    Worker(harness.services.work, handlers).drain()
    (referral,) = harness.services.store.list()
    assert referral.payer == "Blue Cross Blue Shield of Michigan"
    browser = harness.browser()
    page = harness.launch(browser)
    text = browser.get(f"{page.url}referrals/{referral.id}").text
    assert "Blue Cross Blue Shield of Michigan (member XYZ123456789, subscriber self, " \
           "group GRP778899, active)" in text


def test_a_nul_in_a_filter_or_a_form_is_refused_on_both_databases(harness: Harness):
    """PostgreSQL holds no NUL: such a value answered 500 there (and was stored on SQLite)."""
    referral = _open(harness, "sr-nul", actions=("accept",))
    browser = harness.browser()
    page = harness.launch(browser)
    assert browser.get(page.url, params={"specialty": "a\x00b"}).status_code == 400
    detail_url = f"{page.url}referrals/{referral.id}"
    detail = browser.get(detail_url)
    refused = _post(harness, browser, detail_url, detail.text,
                    {"action": "record-outreach", "outcome": "reached", "note": "\x00",
                     "version": str(referral.version)})
    assert refused.status_code == 400
    detail = browser.get(detail_url)
    odd = _post(harness, browser, detail_url, detail.text,
                {"action": "record-outreach", "outcome": "x" * 300,
                 "version": str(referral.version)})
    assert odd.status_code < 500 and "choose the outcome" in odd.text
    assert harness.services.store.get(referral.id).version == referral.version
