"""The closed loop over FHIR, end to end, on SQLite and PostgreSQL, with sekmet-fhir as both the
referrer's EHR and the specialist's:

- the visit completes with no note: the chase Task is created on the specialist's endpoint; the
  specialist completes it with the note as output; the loop closes, later steps do nothing;
- the referrer's EHR gets a Communication per milestone, the referral Task kept current
  (BSeR 7.0 at the end), the note as a DocumentReference and the CMS50 receipt Task;
- by subscription: a finished Encounter completes the visit, a DocumentReference closes the
  loop, and the chase Task is withdrawn;
- with nothing coming back, the ladder ends with a coordinator task whose outcomes chase again
  or give up;
- a decline, a no-show and a failure reach the referrer with their reason or date, and the
  referral Task on their EHR follows (rejected, failed).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from loop_world import PDF, Ehr, World, close_world, make_world

from loop.fhir import RECEIPT_SYSTEM, REFERRAL_SYSTEM
from referrals.model import Reason, Stage


def section(referrer: Ehr, specialist: Ehr, ladder: list[dict[str, Any]]) -> dict[str, Any]:
    return {"specialists": [{"name": "heart-clinic", "specialties": ["cardiology"],
                             "fhir_base": specialist.base, "ladder": ladder}],
            "referrers": [{"name": "riverside", "servers": [referrer.base], "channel": "fhir",
                           "task_updates": True, "time_zone": "America/Chicago"}],
            "poll_hours": 1}


@pytest.fixture
def world(database_url: str, tmp_path: Path, ehrs: tuple[Ehr, Ehr]) -> Iterator[World]:
    referrer, specialist = ehrs
    built = make_world(database_url, tmp_path, referrer, specialist, section(
        referrer, specialist, [{"step": "fhir-task", "after_days": 0},
                               {"step": "coordinator", "after_days": 4}]))
    yield built
    close_world(built)


def chase_task(w: World, referral_id: str) -> dict[str, Any]:
    [task] = w.specialist.search(f"Task?identifier={REFERRAL_SYSTEM}|{referral_id}")
    return task


def test_the_note_in_the_chase_tasks_output_closes_the_loop_and_reaches_the_referrer(
        world: World) -> None:
    w = world
    referral = w.referral()
    visit = w.clock.now + timedelta(days=3)
    w.book(referral.id, visit)
    w.drain()
    w.clock.now = visit + timedelta(minutes=40)
    w.act(referral.id, "complete-visit")
    w.drain()
    task = chase_task(w, referral.id)
    assert (task["status"], task["intent"]) == ("requested", "order")
    assert task["focus"]["reference"] == w.sr_url(referral)
    assert task["businessStatus"]["coding"][0]["code"] == "5.1.4"
    assert task["input"][0]["valueCodeableConcept"]["coding"][0]["code"] == "11488-4"
    [chased] = w.events(referral.id, "chase-note")
    assert (chased.data["step"], chased.data["destination"]) == ("fhir-task", "heart-clinic")
    # the specialist writes the note and completes our Task with it
    note = w.note_on_specialist(referral, related=[{"reference": f"Task/{task['id']}"}])
    w.specialist.put({**task, "status": "completed", "output": [{
        "type": {"text": "consult note"},
        "valueReference": {"reference": f"DocumentReference/{note['id']}"}}]})
    w.advance(hours=1)
    closed = w.services.store.get(referral.id)
    assert closed.stage == Stage.LOOP_CLOSED
    assert f"DocumentReference/{note['id']}" in [o.reference for o in closed.outputs]
    chase = w.loop.chaser.get(referral.id)
    assert (chase.status, chase.stopped_by) == ("stopped", "loop:task-output")
    # the referrer's EHR: one Communication per milestone, the Task, the note, the receipt
    patient = referral.patient
    comms = w.referrer.search(f"Communication?subject={patient}")
    topics = sorted(c["topic"]["coding"][0]["code"] for c in comms)
    assert topics == ["accepted", "note-available", "scheduled", "visit-completed"]
    [scheduled] = [c for c in comms if c["topic"]["coding"][0]["code"] == "scheduled"]
    local = visit.astimezone(__import__("zoneinfo").ZoneInfo("America/Chicago"))
    assert f"{local:%H:%M} (America/Chicago)" in scheduled["payload"][0]["contentString"]
    assert all(c["basedOn"][0]["reference"] == referral.service_request for c in comms)
    [their_task] = w.referrer.search(f"Task?identifier={REFERRAL_SYSTEM}|{referral.id}")
    assert their_task["status"] == "completed"
    assert their_task["businessStatus"]["coding"][0]["code"] == "7.0"
    [delivered] = w.referrer.search(f"DocumentReference?subject={patient}")
    assert base64.b64decode(delivered["content"][0]["attachment"]["data"]) == PDF
    assert delivered["context"]["related"][0]["reference"] == referral.service_request
    [receipt] = [t for t in w.referrer.search(f"Task?subject={patient}")
                 if t["identifier"][0]["system"] == RECEIPT_SYSTEM]
    assert (receipt["status"], receipt["code"]["coding"][0]["code"]) == ("completed", "11488-4")
    assert receipt["basedOn"][0]["reference"] == referral.service_request
    assert receipt["focus"]["reference"] == f"DocumentReference/{delivered['id']}"
    assert receipt["executionPeriod"]["end"]
    [received] = w.events(referral.id, "record-receipt")
    assert received.data["channel"] == "fhir" and received.data["document"] == \
        f"DocumentReference/{note['id']}"
    local_receipt = w.services.resources.try_get("Task", received.data["receipt"][5:])
    assert local_receipt is not None and local_receipt["status"] == "completed"
    updates = w.events(referral.id, "update-referrer")
    assert sorted(e.data["milestone"] for e in updates) == topics
    # later steps find the chase stopped: no coordinator task, no more polling
    w.advance(days=5)
    assert w.services.tasks.open_for(referral.id) == []
    assert len(w.events(referral.id, "chase-note")) == 1
    assert w.pending("loop.poll-task") == []


def test_by_subscription_an_encounter_completes_the_visit_and_a_note_closes_the_loop(
        world: World) -> None:
    w = world
    made = w.loop.notes.subscribe(w.specialist.base)
    try:
        deadline = time.monotonic() + 20
        while any(w.specialist.read(f"Subscription/{s}")["status"] != "active" for s in made):
            assert time.monotonic() < deadline, "the Subscriptions did not become active"
            time.sleep(0.1)
        referral = w.referral()
        w.specialist.create({"resourceType": "Encounter", "status": "finished",
                             "class": {"code": "AMB"},
                             "basedOn": [{"reference": w.sr_url(referral)}]})
        wait_for(w, lambda: w.services.store.get(referral.id).stage == Stage.VISIT_COMPLETED)
        [visited] = w.events(referral.id, "complete-visit")
        assert visited.source == "loop:fhir-subscription"
        wait_for(w, lambda: bool(w.events(referral.id, "chase-note")))
        task = chase_task(w, referral.id)
        note = w.note_on_specialist(referral, related=[{"reference": w.sr_url(referral)}])
        wait_for(w, lambda: w.services.store.get(referral.id).stage == Stage.LOOP_CLOSED)
        [closing] = w.events(referral.id, "close-loop")
        assert closing.source == "loop:fhir-subscription"
        assert closing.data["add_outputs"][0]["reference"] == f"DocumentReference/{note['id']}"
        w.drain()
        withdrawn = w.specialist.read(f"Task/{task['id']}")
        assert withdrawn["status"] == "cancelled"
        assert "other means" in withdrawn["statusReason"]["text"]
        # a note that names no referral of ours is left alone
        stranger = w.note_on_specialist(referral, related=[
            {"reference": "http://elsewhere.example/fhir/ServiceRequest/1"}])
        assert w.loop.notes.apply_document(w.specialist.base, stranger, "test") == \
            "no referral of ours"
    finally:
        for subscription in made:
            requests.delete(f"{w.specialist.base}/Subscription/{subscription}", timeout=10)


def test_with_nothing_coming_back_a_coordinator_chases_again_or_gives_up(world: World) -> None:
    w = world
    referral = w.referral()
    w.act(referral.id, "complete-visit")
    w.drain()
    assert w.loop.chaser.get(referral.id).status == "chasing"
    w.advance(days=4, minutes=1)
    [task] = w.services.tasks.open_for(referral.id)
    assert task.kind == "chase-note" and "heart-clinic" in task.reason
    assert w.loop.chaser.get(referral.id).status == "exhausted"
    assert [e.data["step"] for e in w.events(referral.id, "chase-note")] == [
        "fhir-task", "coordinator"]
    w.services.tasks.complete(task.id, "chase-again", "Practitioner/coord-1", "asked by phone")
    w.drain()
    [again] = w.services.tasks.open_for(referral.id)
    assert again.id != task.id and again.data["n"] == 1
    w.services.tasks.complete(again.id, "no-note-coming", "Practitioner/coord-1", "")
    w.drain()
    assert w.loop.chaser.get(referral.id).status == "abandoned"
    assert w.services.tasks.open_for(referral.id) == []
    # the referral stays visit-completed: the loop is not closed by giving up
    assert w.services.store.get(referral.id).stage == Stage.VISIT_COMPLETED


def test_a_decline_a_no_show_and_a_failure_reach_the_referrer_with_why_and_when(
        world: World) -> None:
    w = world
    declined = w.referral(accept=False)
    w.act(declined.id, "decline", reason=Reason("capacity", "No capacity until May"))
    missed = w.referral()
    visit = w.clock.now + timedelta(days=2)
    w.book(missed.id, visit)
    w.drain()
    appointment = w.services.store.get(missed.id).outputs[-1]
    w.clock.now = visit + timedelta(hours=2)
    w.act(missed.id, "no-show", changes={"add_outputs": [appointment]})
    w.act(missed.id, "fail", reason=Reason("unreachable", "Patient unreachable after no-show"))
    w.drain()

    def told(referral: Any) -> dict[str, str]:
        return {c["topic"]["coding"][0]["code"]: c["payload"][0]["contentString"]
                for c in w.referrer.search(f"Communication?subject={referral.patient}")}

    assert told(declined) == {"declined": "The referral was declined: No capacity until May."}
    local = visit.astimezone(__import__("zoneinfo").ZoneInfo("America/Chicago"))
    texts = told(missed)
    assert sorted(texts) == ["accepted", "failed", "no-show", "scheduled"]
    assert texts["no-show"] == f"The patient did not attend the appointment on {local:%a} " \
        f"{local.day} {local:%b %Y, %H:%M} (America/Chicago)."
    assert texts["failed"] == \
        "The referral could not be completed: Patient unreachable after no-show."
    statuses = {r.id: w.referrer.search(f"Task?identifier={REFERRAL_SYSTEM}|{r.id}")[0]["status"]
                for r in (declined, missed)}
    assert statuses == {declined.id: "rejected", missed.id: "failed"}
    assert [e.data["milestone"] for e in w.events(declined.id, "update-referrer")] == [
        "declined"]
    # nothing was chased: neither referral reached the visit
    assert w.events(declined.id, "chase-note") == w.events(missed.id, "chase-note") == []


def wait_for(w: World, condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for a notification"
        w.drain()
        time.sleep(0.1)
