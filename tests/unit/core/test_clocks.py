"""Program clocks (TEAM, ASM) as referral attributes: the clock actions of the lifecycle, how a
running clock caps the deadline (and survives a hold), the Task extension and the stored form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from referrals import closed_loop as loop
from referrals.codec import referral_from_dict, referral_to_dict
from referrals.errors import IllegalTransition
from referrals.lifecycle import transition
from referrals.model import Command, Referral, Stage
from referrals.sla import deadline_for
from referrals.task import CLOCK_EXTENSION, to_task

AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def referral(stage: Stage = Stage.SCHEDULED) -> Referral:
    # a routine referral that entered `scheduled` at AT: its own deadline is 30 days later
    return Referral(id="r1", source_key="k", service_request="ServiceRequest/1",
                    patient="Patient/1", stage=stage, version=3, created_at=AT,
                    updated_at=AT, deadline=AT + timedelta(hours=720))


def start(r: Referral, program: str = loop.TEAM, days: float = 5, *, goal: str = "visit",
          at: datetime = AT) -> Referral:
    return transition(r, Command(loop.START_CLOCK, at=at, changes={"clock": {
        "program": program, "goal": goal, "started_at": at - timedelta(days=25),
        "due_at": at + timedelta(days=days)}})).referral


def end(r: Referral, action: str, program: str = loop.TEAM, at: datetime = AT) -> Referral:
    return transition(r, Command(action, at=at, changes={"clock": {
        "program": program, "at": at.isoformat()}})).referral


def test_a_clock_due_before_the_stage_deadline_brings_the_deadline_forward() -> None:
    clocked = start(referral())
    [clock] = clocked.clocks
    assert (clock.program, clock.goal, clock.due_at) == ("team", "visit", AT + timedelta(days=5))
    assert clocked.deadline == AT + timedelta(days=5)
    assert clocked.stage == Stage.SCHEDULED and clocked.version == 4
    later = start(referral(), loop.ASM, days=60, goal="report")
    assert later.deadline == AT + timedelta(hours=720)  # the stage's own deadline is earlier


def test_meeting_the_clock_that_held_the_deadline_restarts_the_stage_window() -> None:
    met_at = AT + timedelta(days=2)
    met = end(start(referral()), loop.MEET_CLOCK, at=met_at)
    assert met.clock("team") is not None and met.clock("team").met_at == met_at  # type: ignore
    assert met.deadline == met_at + timedelta(hours=720)
    # a clock that did not hold the deadline leaves it alone when it ends
    both = start(start(referral()), loop.ASM, days=10, goal="report")
    assert end(both, loop.MEET_CLOCK, loop.ASM).deadline == AT + timedelta(days=5)


def test_a_missed_clock_may_still_be_met_late_but_never_twice() -> None:
    missed = end(start(referral()), loop.MISS_CLOCK, at=AT + timedelta(days=5))
    clock = missed.clock("team")
    assert clock is not None and not clock.open and clock.missed_at == AT + timedelta(days=5)
    with pytest.raises(IllegalTransition, match="ended already"):
        end(missed, loop.MISS_CLOCK)
    late = end(missed, loop.MEET_CLOCK, at=AT + timedelta(days=9))
    assert late.clock("team").met_at == AT + timedelta(days=9)  # type: ignore[union-attr]
    with pytest.raises(IllegalTransition, match="met already"):
        end(late, loop.MEET_CLOCK)


@pytest.mark.parametrize(("changes", "why"), [
    ({}, "needs changes"),
    ({"clock": {"program": "mips", "goal": "visit", "started_at": AT.isoformat(),
                "due_at": AT.isoformat()}}, "unknown program"),
    ({"clock": {"program": "team", "goal": "lunch", "started_at": AT.isoformat(),
                "due_at": AT.isoformat()}}, "goal must be"),
    ({"clock": {"program": "team", "goal": "visit", "started_at": AT.isoformat(),
                "due_at": (AT - timedelta(days=1)).isoformat()}}, "due before it starts"),
    ({"clock": {"program": "team", "goal": "visit", "started_at": "soon",
                "due_at": AT.isoformat()}}, "not a date"),
])
def test_bad_clock_changes_are_refused(changes: dict[str, object], why: str) -> None:
    with pytest.raises(IllegalTransition, match=why):
        transition(referral(), Command(loop.START_CLOCK, changes=changes))


def test_one_clock_per_program_and_ending_a_missing_clock_is_refused() -> None:
    with pytest.raises(IllegalTransition, match="already has a team clock"):
        start(start(referral()))
    with pytest.raises(IllegalTransition, match="no asm clock"):
        end(referral(), loop.MEET_CLOCK, loop.ASM)
    with pytest.raises(IllegalTransition, match="unknown fields"):
        transition(referral(), Command("amend", changes={"clock": {"program": "team"}}))


def test_the_program_clock_keeps_running_on_hold_and_stops_counting_when_finished() -> None:
    clocked = start(referral(Stage.ON_HOLD))
    assert clocked.deadline == AT + timedelta(days=5)
    assert deadline_for(clocked, AT) == AT + timedelta(days=5)
    closed = start(referral(Stage.LOOP_CLOSED).evolve(deadline=None), loop.ASM, goal="report")
    assert closed.deadline is None and closed.clock("asm") is not None


def test_the_event_and_the_task_carry_the_clock() -> None:
    change = transition(referral(), Command(loop.START_CLOCK, at=AT, changes={"clock": {
        "program": "team", "goal": "visit", "started_at": AT, "due_at": AT + timedelta(days=30)}}))
    assert change.event.action == "start-clock"
    assert change.event.data["clock"] == {"program": "team", "goal": "visit",
                                          "started_at": "2026-03-02T09:00:00+00:00",
                                          "due_at": "2026-04-01T09:00:00+00:00"}
    met = end(change.referral, loop.MEET_CLOCK, at=AT + timedelta(days=3))
    [extension] = to_task(met)["extension"]
    assert extension["url"] == CLOCK_EXTENSION
    assert {e["url"]: next(v for k, v in e.items() if k.startswith("value"))
            for e in extension["extension"]} == {
        "program": "team", "goal": "visit", "start": "2026-03-02T09:00:00.000Z",
        "due": "2026-04-01T09:00:00.000Z", "met": "2026-03-05T09:00:00.000Z"}
    assert "extension" not in to_task(referral())


def test_clocks_survive_the_stored_form() -> None:
    missed = end(start(referral()), loop.MISS_CLOCK, at=AT + timedelta(days=5))
    assert referral_from_dict(referral_to_dict(missed)) == missed
    assert "clocks" not in referral_to_dict(referral())  # rows without clocks are unchanged


def test_every_closed_loop_event_is_a_lifecycle_action() -> None:
    from referrals.lifecycle import TABLE

    assert set(loop.LOOP_ACTIONS) <= set(TABLE)
    assert len(set(loop.LOOP_ACTIONS)) == len(loop.LOOP_ACTIONS) == 7



def test_closed_loop_records_carry_their_details_as_event_data() -> None:
    change = transition(referral(Stage.LOOP_CLOSED), Command(
        loop.RECORD_RECEIPT, at=AT, changes={"details": {
            "channel": "fhir", "document": "DocumentReference/n1", "received_at": AT}}))
    assert change.event.data == {"channel": "fhir", "document": "DocumentReference/n1",
                                 "received_at": "2026-03-02T09:00:00+00:00"}
    assert change.referral.stage == Stage.LOOP_CLOSED
    with pytest.raises(IllegalTransition, match="unknown fields"):
        transition(referral(), Command("amend", changes={"details": {"a": 1}}))
    with pytest.raises(IllegalTransition, match="details must be a mapping"):
        transition(referral(), Command(loop.UPDATE_REFERRER, changes={"details": "sent"}))
