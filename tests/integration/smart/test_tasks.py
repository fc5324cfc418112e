"""Coordinator tasks in the SMART app (strict EHR, real database): open tasks on the worklist and
the referral page, the outcome recorded with CSRF and Origin checks, handed to the work queue."""

from __future__ import annotations

import re

import sqlalchemy as sa
from smart_harness import Harness

from referrals.model import Command, Referral, new_referral_id
from referrals.store.schema import work_items

OUTCOMES = ["reached", "left-voicemail", "wrong-number", "declined"]


def _referral(h: Harness, key: str, patient: str = "Patient/p1") -> Referral:
    """A referral from the EHR that launches the app (a launch's patient is matched only with
    referrals from the launch's FHIR servers)."""
    draft = Referral(id=new_referral_id(), source_key=f"fhir|{h.ehr.fhir}|ServiceRequest/{key}",
                     service_request=f"ServiceRequest/{key}", patient=patient,
                     specialty="cardiology")
    return h.services.referrals.open(draft, Command("detect"))[0]


def _task(h: Harness, referral: Referral, key: str) -> str:
    return h.services.tasks.open(referral.id, "call-patient", "no answer to two texts",
                                 outcomes=OUTCOMES, on_outcome="test.outcome", key=key)


def _outcome_form(html: str, task_id: str) -> tuple[str, str]:
    action = re.search(rf'action="([^"]+/tasks/{task_id}/outcome)"', html)
    token = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert action and token, "the referral page offers no outcome form for the task"
    return action.group(1), token.group(1)


def test_tasks_on_worklist_and_referral_page_and_outcome_recorded(harness: Harness) -> None:
    referral = _referral(harness, "sr-t1")
    task_id = _task(harness, referral, "k-t1")
    browser = harness.browser()
    worklist = harness.launch(browser)
    assert "Open tasks (1)" in worklist.text and "Call the patient" in worklist.text
    assert f"referrals/{referral.id}" in worklist.text
    page = browser.get(f"{worklist.url}referrals/{referral.id}")
    assert "Call the patient" in page.text and "no answer to two texts" in page.text
    path, token = _outcome_form(page.text, task_id)
    done = browser.post(harness.url + path, data={
        "csrf_token": token, "outcome": "left-voicemail", "note": "mailbox full",
        "referral": referral.id}, headers={"Origin": harness.url})
    assert done.status_code == 200 and "task outcome recorded" in done.text
    assert "Open tasks (0)" in done.text
    task = harness.services.tasks.get(task_id)
    assert task.outcome == "left-voicemail" and task.actor == "Practitioner/coord-1"
    assert task.note == "mailbox full"
    with harness.services.db.read() as c:
        payloads = list(c.execute(sa.select(work_items.c.payload).where(
            work_items.c.kind == "test.outcome")).scalars())
    assert [p["outcome"] for p in payloads] == ["left-voicemail"]


def test_outcome_needs_csrf_and_a_valid_choice(harness: Harness) -> None:
    referral = _referral(harness, "sr-t2")
    task_id = _task(harness, referral, "k-t2")
    browser = harness.browser()
    worklist = harness.launch(browser)
    page = browser.get(f"{worklist.url}referrals/{referral.id}")
    path, token = _outcome_form(page.text, task_id)
    forged = browser.post(harness.url + path, data={"outcome": "reached"},
                          headers={"Origin": harness.url})
    assert forged.status_code == 403
    foreign = browser.post(harness.url + path, data={"csrf_token": token, "outcome": "reached"},
                           headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403
    wrong = browser.post(harness.url + path, data={
        "csrf_token": token, "outcome": "invented", "referral": referral.id},
        headers={"Origin": harness.url})
    assert wrong.status_code == 409 and "not an outcome" in wrong.text
    missing = browser.post(f"{harness.url}{path.rsplit('/tasks/', 1)[0]}/tasks/nope/outcome",
                           data={"csrf_token": token, "outcome": "reached"},
                           headers={"Origin": harness.url})
    assert missing.status_code == 404
    assert harness.services.tasks.get(task_id).is_open


def test_patient_scoped_worklist_shows_only_that_patients_tasks(harness: Harness) -> None:
    mine = _referral(harness, "sr-t3", patient="Patient/p1")
    other = _referral(harness, "sr-t4", patient="Patient/p9")
    _task(harness, mine, "k-t3")
    _task(harness, other, "k-t4")
    browser = harness.browser()
    scoped = harness.launch(browser, patient="Patient/p1")
    assert "Open tasks (1)" in scoped.text and f"referrals/{mine.id}" in scoped.text
    assert f"referrals/{other.id}" not in scoped.text
