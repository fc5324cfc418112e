"""Program clocks end to end, on SQLite and PostgreSQL, with sekmet-fhir as the referrer's EHR:

- TEAM: a post-discharge referral to primary care (its ServiceRequest names an inpatient stay,
  read from the EHR) gets a clock due 30 days after the discharge; the deadline (the worklist's
  Due column) is capped by it; the visit meets it. One discharged 31 days ago misses it at
  once; an outpatient one gets none.
- ASM: a heart-failure referral to cardiology gets a clock at the visit; the consult note
  reaching the referrer's EHR meets it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from loop_world import Ehr, World, close_world, make_world

from referrals.model import Stage
from referrals.worklist import WorklistFilter, fetch_clocks, fetch_page

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


@pytest.fixture
def world(database_url: str, tmp_path: Path, ehrs: tuple[Ehr, Ehr]) -> Iterator[World]:
    referrer, specialist = ehrs
    built = make_world(database_url, tmp_path, referrer, specialist, {
        "programs": [
            {"program": "team", "specialties": ["primary care"], "encounter_classes": ["IMP"]},
            {"program": "asm", "days": 14, "specialties": ["cardiology"],
             "reason_codes": ["I50"]}],
        "referrers": [{"name": "riverside", "servers": [referrer.base], "channel": "fhir"}]})
    yield built
    close_world(built)


def discharged(w: World, days_ago: float, klass: str = "IMP") -> dict[str, Any]:
    stay = w.referrer.create({
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": ACT_CODE, "code": klass},
        "period": {"start": (w.clock.now - timedelta(days=days_ago + 4)).isoformat(),
                   "end": (w.clock.now - timedelta(days=days_ago)).isoformat()}})
    return {"encounter": {"reference": f"Encounter/{stay['id']}"}}


def test_team_clock_from_the_discharge_caps_the_deadline_and_the_visit_meets_it(
        world: World) -> None:
    w = world
    referral = w.referral("primary care", service_request=discharged(w, 5))
    clock = w.services.store.get(referral.id).clock("team")
    assert clock is not None and clock.goal == "visit" and clock.open
    stay_end = w.clock.now - timedelta(days=5)
    assert abs((clock.due_at - (stay_end + timedelta(days=30))).total_seconds()) < 2
    [started] = w.events(referral.id, "start-clock")
    assert started.data["clock"]["program"] == "team"
    # a scheduled routine referral may wait 30 days; the clock says 25: the worklist shows 25
    w.book(referral.id, w.clock.now + timedelta(days=20))
    booked = w.services.store.get(referral.id)
    assert booked.deadline == clock.due_at
    page = fetch_page(w.services.db, WorklistFilter(), now=w.clock.now)
    row = next(r for r in page.rows if r.id == referral.id)
    assert row.deadline == clock.due_at
    assert fetch_clocks(w.services.db, [row])[referral.id][0].program == "team"
    w.clock.now += timedelta(days=20)
    w.act(referral.id, "complete-visit")
    w.drain()
    met = w.services.store.get(referral.id).clock("team")
    assert met is not None and met.met_at is not None and met.missed_at is None
    assert [e.action for e in w.events(referral.id) if "clock" in e.action] == [
        "start-clock", "meet-clock"]
    # its miss check, due later, finds it met
    w.advance(days=11)
    assert w.events(referral.id, "miss-clock") == []


def test_team_clock_long_after_discharge_is_missed_and_outpatients_get_none(
        world: World) -> None:
    w = world
    late = w.referral("primary care", service_request=discharged(w, 31))
    clock = w.services.store.get(late.id).clock("team")
    assert clock is not None and clock.missed_at is not None and clock.met_at is None
    assert [e.action for e in w.events(late.id) if "clock" in e.action] == [
        "start-clock", "miss-clock"]
    outpatient = w.referral("primary care", service_request=discharged(w, 2, "AMB"))
    assert w.services.store.get(outpatient.id).clocks == ()
    other = w.referral("dermatology", service_request=discharged(w, 2))
    assert w.services.store.get(other.id).clocks == ()


def test_asm_clock_from_the_visit_is_met_when_the_note_reaches_the_referrer(
        world: World) -> None:
    w = world
    failing_heart = {"reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm",
                                                 "code": "I50.9"}]}]}
    referral = w.referral("cardiology", service_request=failing_heart)
    back_pain = w.referral("cardiology", service_request={"reasonCode": [{"coding": [{
        "system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "M54.5"}]}]})
    assert w.services.store.get(referral.id).clocks == ()  # starts at the visit
    for r in (referral, back_pain):
        w.act(r.id, "complete-visit")
    w.drain()
    clock = w.services.store.get(referral.id).clock("asm")
    assert clock is not None and clock.goal == "report"
    assert clock.due_at - clock.started_at == timedelta(days=14)
    assert w.services.store.get(back_pain.id).clocks == ()  # not heart failure
    w.clock.now += timedelta(days=3)
    w.act(referral.id, "close-loop", changes={"add_outputs": [note(w, referral)]})
    w.drain()
    done = w.services.store.get(referral.id)
    assert done.stage == Stage.LOOP_CLOSED
    assert len(w.events(referral.id, "record-receipt")) == 1
    met = done.clock("asm")
    assert met is not None and met.met_at is not None
    assert [e.action for e in w.events(referral.id) if "clock" in e.action] == [
        "start-clock", "meet-clock"]


def note(w: World, referral: Any) -> Any:
    import base64

    from referrals.model import Link

    document = {"resourceType": "DocumentReference", "id": f"note-{referral.id[-8:]}",
                "status": "current", "subject": {"reference": referral.patient},
                "content": [{"attachment": {"contentType": "text/plain",
                                            "data": base64.b64encode(b"Seen.").decode()}}]}
    w.services.resources.put(document, server="local")
    return Link("consult-note", f"DocumentReference/{document['id']}", "Consult note")


def test_a_note_before_the_visit_meets_team_and_no_chase_starts(world: World) -> None:
    """The issue's edge case: the note arrives before anyone marked the visit complete. It
    closes the loop at once and counts as the visit for TEAM."""
    w = world
    referral = w.referral("primary care", service_request=discharged(w, 3))
    w.book(referral.id, w.clock.now + timedelta(days=7))
    w.clock.now += timedelta(days=8)
    w.act(referral.id, "close-loop", changes={"add_outputs": [note(w, referral)]})
    w.drain()
    done = w.services.store.get(referral.id)
    assert done.stage == Stage.LOOP_CLOSED
    team = done.clock("team")
    assert team is not None and team.met_at is not None and team.missed_at is None
    assert team.met_at <= team.due_at
    actions = w.actions(referral.id)
    assert "complete-visit" not in actions and "chase-note" not in actions
    assert actions.index("close-loop") < actions.index("meet-clock")
    assert len(w.events(referral.id, "record-receipt")) == 1
    w.advance(days=30)  # the miss check at the due time finds it met
    assert w.events(referral.id, "miss-clock") == []


def test_asm_clock_runs_out_then_a_late_report_is_recorded_met_late(world: World) -> None:
    w = world
    referral = w.referral("cardiology", service_request={"reasonCode": [{"coding": [{
        "system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I50.22"}]}]})
    w.act(referral.id, "complete-visit")
    w.drain()
    started = w.services.store.get(referral.id).clock("asm")
    assert started is not None and started.open
    w.advance(days=15)
    missed = w.services.store.get(referral.id).clock("asm")
    assert missed is not None and missed.missed_at == started.due_at and missed.met_at is None
    rows = fetch_page(w.services.db, WorklistFilter(), now=w.clock.now).rows
    shown = fetch_clocks(w.services.db, rows).get(referral.id, [])
    assert next(c for c in shown if c.program == "asm").missed_at is not None
    w.act(referral.id, "close-loop", changes={"add_outputs": [note(w, referral)]})
    w.drain()
    late = w.services.store.get(referral.id).clock("asm")
    assert late is not None and late.missed_at == started.due_at
    assert late.met_at is not None and late.met_at > late.due_at
    assert [e.action for e in w.events(referral.id) if "clock" in e.action] == [
        "start-clock", "miss-clock", "meet-clock"]
