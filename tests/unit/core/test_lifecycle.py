"""The whole transition table, checked against an expected table written here by hand.

The expected table below is deliberately NOT derived from referrals.lifecycle.TABLE: it restates
the BSeR/360X harmonised state machine (landscape.md §2.4) refined by our operational stages
(§2.6), so a change to the code's table that nobody meant shows up as a failing pair.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from referrals.errors import IllegalTransition
from referrals.lifecycle import TABLE, moment, start, transition
from referrals.model import Actor, Clock, Command, Link, Reason, Referral, Stage
from referrals.task import bser_code, task_status, to_task

OPEN = ("detected triage accepted coverage-check auth-pending outreach scheduled no-show "
        "appointment-cancelled visit-completed cancel-requested on-hold")
ACTIVE_NOT_CANCELLING = ("detected triage accepted coverage-check auth-pending outreach "
                         "scheduled no-show appointment-cancelled visit-completed")
EVERY = OPEN + " declined cancelled loop-closed failed"

#: action -> (stages it is allowed from, target; "same" keeps the stage, "held" = held stage)
EXPECTED: dict[str, tuple[str, str]] = {
    "triage": ("detected", "triage"),
    "accept": ("detected triage", "accepted"),
    "decline": (ACTIVE_NOT_CANCELLING, "declined"),
    "check-coverage": ("accepted", "coverage-check"),
    "request-authorization": ("accepted coverage-check", "auth-pending"),
    "authorize": ("auth-pending", "outreach"),
    "start-outreach": ("accepted coverage-check no-show appointment-cancelled", "outreach"),
    "record-outreach": ("outreach no-show appointment-cancelled", "same"),
    "schedule": ("accepted coverage-check auth-pending outreach scheduled no-show "
                 "appointment-cancelled visit-completed", "scheduled"),
    "no-show": ("scheduled", "no-show"),
    "cancel-appointment": ("scheduled visit-completed", "appointment-cancelled"),
    "complete-visit": ("accepted coverage-check auth-pending outreach scheduled visit-completed",
                       "visit-completed"),
    "close-loop": ("accepted coverage-check auth-pending outreach scheduled visit-completed "
                   "cancel-requested", "loop-closed"),
    "request-cancel": (ACTIVE_NOT_CANCELLING + " on-hold", "cancel-requested"),
    "cancel": ("detected triage cancel-requested", "cancelled"),
    "hold": (ACTIVE_NOT_CANCELLING, "on-hold"),
    "resume": ("on-hold", "held"),
    "fail": (OPEN, "failed"),
    "assign": (OPEN, "same"),
    "amend": (OPEN, "same"),
    "link": (OPEN, "same"),
    # closed-loop records (referrals/closed_loop.py): chasing the note after the visit, and what
    # happens after a referral finished (the referrer told, the report received, program clocks)
    "chase-note": ("visit-completed", "same"),
    "update-referrer": (EVERY, "same"),
    "send-note": (EVERY, "same"),
    "record-receipt": (EVERY, "same"),
    "start-clock": (EVERY, "same"),
    "meet-clock": (EVERY, "same"),
    "miss-clock": (EVERY, "same"),
}

ALL_STAGES = [
    "detected", "triage", "accepted", "declined", "coverage-check", "auth-pending", "outreach",
    "scheduled", "no-show", "appointment-cancelled", "visit-completed", "cancel-requested",
    "cancelled", "loop-closed", "failed", "on-hold",
]
TERMINAL = ["declined", "cancelled", "loop-closed", "failed"]
NEEDS_REASON = {"decline", "cancel", "hold", "fail"}
#: actions that a finished referral still takes
RECORDS = {"update-referrer", "send-note", "record-receipt", "start-clock", "meet-clock",
           "miss-clock"}
#: the running clock every test referral has, and the changes each clock action carries
RUNNING = Clock("team", "visit", datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 31,
                                                                             tzinfo=UTC))
CLOCK_CHANGES = {
    "start-clock": {"clock": {"program": "asm", "goal": "report",
                              "started_at": "2026-03-02T09:30:00+00:00",
                              "due_at": "2026-03-16T09:30:00+00:00"}},
    "meet-clock": {"clock": {"program": "team", "at": "2026-03-02T09:30:00+00:00"}},
    "miss-clock": {"clock": {"program": "team", "at": "2026-03-02T09:30:00+00:00"}},
}
HELD_STAGE = Stage.OUTREACH  # what an on-hold referral in these tests was paused from

#: stage -> (Task.status, BSeR businessStatus code or None)
EXPECTED_STATUS: dict[str, tuple[str, str | None]] = {
    "detected": ("requested", "2.0"),
    "triage": ("received", "2.0"),
    "accepted": ("accepted", "3.0"),
    "declined": ("rejected", "4.0"),
    "coverage-check": ("in-progress", "3.0"),
    "auth-pending": ("in-progress", "3.0"),
    "outreach": ("in-progress", "3.0"),
    "scheduled": ("in-progress", "5.1.1"),
    "no-show": ("in-progress", "5.1.2"),
    "appointment-cancelled": ("in-progress", "5.1.3"),
    "visit-completed": ("in-progress", "5.1.4"),
    "cancel-requested": ("in-progress", "5.2"),
    "cancelled": ("cancelled", "6.0"),
    "loop-closed": ("completed", "7.0"),
    "failed": ("failed", None),
    "on-hold": ("on-hold", "3.0"),  # keeps the code of the paused stage (outreach: 3.0)
}
REASON_STATUSES = {"rejected", "on-hold", "cancelled", "failed"}
AT = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def in_stage(stage: str) -> Referral:
    held = HELD_STAGE if stage == "on-hold" else None
    reason = Reason("waiting", "Waiting on the payer") \
        if stage in ("on-hold", "declined", "cancelled", "failed") else None
    return Referral(id="r1", source_key="test|ServiceRequest/1",
                    service_request="ServiceRequest/1", patient="Patient/1", stage=Stage(stage),
                    held_from=held, status_reason=reason, version=4,
                    created_at=AT - timedelta(days=2), updated_at=AT - timedelta(days=1),
                    clocks=(RUNNING,))


def command(action: str, *, reason: bool = True) -> Command:
    return Command(action, actor=Actor("Practitioner/7", "Dr Seven", "human"), at=AT,
                   reason=Reason("why", "Because") if reason else None,
                   source="hl7:EPIC", source_message="MSG0001",
                   changes=CLOCK_CHANGES.get(action, {}))


def test_expected_table_names_every_action_and_stage() -> None:
    assert set(EXPECTED) == set(TABLE)
    assert set(ALL_STAGES) == {s.value for s in Stage}
    for sources, _target in EXPECTED.values():
        assert set(sources.split()) <= set(ALL_STAGES)


@pytest.mark.parametrize("stage", ALL_STAGES)
@pytest.mark.parametrize("action", sorted(TABLE))
def test_every_action_from_every_stage(action: str, stage: str) -> None:
    sources, target = EXPECTED[action]
    referral = in_stage(stage)
    if stage not in sources.split():
        with pytest.raises(IllegalTransition) as caught:
            transition(referral, command(action))
        assert caught.value.action == action and caught.value.stage == stage
        assert action in str(caught.value) and repr(stage) in str(caught.value)
        if stage in TERMINAL:
            assert "finished" in caught.value.why
        return
    change = transition(referral, command(action, reason=action in NEEDS_REASON))
    expected = {"same": stage, "held": HELD_STAGE.value}.get(target, target)
    new = change.referral
    assert new.stage.value == expected
    assert new.version == referral.version + 1 and change.event.seq == new.version
    assert change.event.from_stage == Stage(stage) and change.event.to_stage == new.stage
    status, bser = EXPECTED_STATUS[new.stage.value]
    if new.stage == Stage.ON_HOLD:
        bser = EXPECTED_STATUS[new.held_from.value][1] if new.held_from else None
    task = to_task(new)
    assert task["status"] == status
    codes = {c["system"].rsplit("/", 1)[1]: c["code"] for c in task["businessStatus"]["coding"]}
    assert codes.get("TaskBusinessStatusCS") == bser
    assert codes["referral-stage"] == new.stage.value
    # statusReason is present exactly when the Task.status needs one
    assert ("statusReason" in task) == (status in REASON_STATUSES), task.get("statusReason")


@pytest.mark.parametrize("action", sorted(NEEDS_REASON))
def test_reason_required(action: str) -> None:
    stage = EXPECTED[action][0].split()[-1]
    with pytest.raises(IllegalTransition, match="reason is required"):
        transition(in_stage(stage), command(action, reason=False))
    new = transition(in_stage(stage), command(action)).referral
    assert new.status_reason == Reason("why", "Because")
    assert to_task(new)["statusReason"]["coding"][0]["code"] == "why"


def test_only_the_expected_actions_need_a_reason() -> None:
    assert {name for name, rule in TABLE.items() if rule.needs_reason} == NEEDS_REASON
    for action, (sources, _target) in EXPECTED.items():
        if action not in NEEDS_REASON:
            transition(in_stage(sources.split()[0]), command(action, reason=False))


@pytest.mark.parametrize("stage", sorted(set(ALL_STAGES) - {"on-hold"}))
def test_task_status_and_bser_code_per_stage(stage: str) -> None:
    referral = in_stage(stage)
    assert (task_status(referral), bser_code(referral)) == EXPECTED_STATUS[stage]


@pytest.mark.parametrize("held", ACTIVE_NOT_CANCELLING.split())
def test_hold_then_resume_returns_to_the_held_stage(held: str) -> None:
    referral = in_stage(held).evolve(status_reason=None)
    on_hold = transition(referral, command("hold")).referral
    assert on_hold.stage == Stage.ON_HOLD and on_hold.held_from == Stage(held)
    assert task_status(on_hold) == "on-hold"
    assert bser_code(on_hold) == EXPECTED_STATUS[held][1]
    # the stage's SLA clock is paused; the running program clock is not
    assert on_hold.deadline == RUNNING.due_at
    assert transition(referral.evolve(clocks=()), command("hold")).referral.deadline is None
    assert to_task(on_hold)["statusReason"]["coding"][0]["code"] == "why"
    resumed = transition(on_hold, command("resume", reason=False)).referral
    assert resumed.stage == Stage(held) and resumed.held_from is None
    assert resumed.status_reason is None and resumed.deadline is not None


def test_request_cancel_while_on_hold_forgets_the_hold() -> None:
    new = transition(in_stage("on-hold"), command("request-cancel")).referral
    assert new.stage == Stage.CANCEL_REQUESTED and new.held_from is None
    assert "statusReason" not in to_task(new)


@pytest.mark.parametrize("stage", TERMINAL)
def test_terminal_stages_allow_only_the_closed_loop_records(stage: str) -> None:
    referral = in_stage(stage)
    assert referral.terminal
    for action in TABLE:
        if action in RECORDS:
            after = transition(referral, command(action)).referral
            assert after.stage == referral.stage and after.deadline is None
            continue
        with pytest.raises(IllegalTransition, match="finished"):
            transition(referral, command(action))


def test_open_stages_are_not_terminal() -> None:
    assert [s for s in ALL_STAGES if in_stage(s).terminal] == TERMINAL


def test_unknown_action_and_unknown_change_are_refused() -> None:
    with pytest.raises(IllegalTransition, match="no such action"):
        transition(in_stage("accepted"), command("teleport"))
    with pytest.raises(IllegalTransition, match="unknown fields"):
        transition(in_stage("accepted"), Command("amend", changes={"colour": "red"}))
    with pytest.raises(IllegalTransition, match="priority"):
        transition(in_stage("accepted"), Command("amend", changes={"priority": "whenever"}))


def test_start_opens_a_detected_referral_with_event_and_deadline() -> None:
    draft = Referral(id="r9", source_key="k", service_request="ServiceRequest/9",
                     patient="Patient/9", priority="urgent")
    change = start(draft, Command("detect", at=AT, source="fhir:ehr", source_message="n-1"))
    assert change.referral.stage == Stage.DETECTED and change.referral.version == 1
    assert change.referral.deadline == AT + timedelta(hours=24)
    assert change.event.action == "detect" and change.event.from_stage is None
    assert change.event.source_message == "n-1"
    with pytest.raises(IllegalTransition, match="exists already"):
        start(change.referral, Command("detect"))


def test_event_records_who_when_why_and_source() -> None:
    change = transition(in_stage("scheduled"), Command(
        "no-show", actor=Actor("Device/hl7", "HL7 listener"), at=AT,
        reason=Reason("patient-absent", "Did not attend"), source="hl7:CLINIC",
        source_message="SIU-26-1",
        changes={"add_outputs": [Link("appointment", "Appointment/5", "Visit")]}))
    event = change.event
    assert (event.actor.reference, event.at, event.reason, event.source, event.source_message) == (
        "Device/hl7", AT, Reason("patient-absent", "Did not attend"), "hl7:CLINIC", "SIU-26-1")
    assert event.data["add_outputs"] == [
        {"type": "appointment", "reference": "Appointment/5", "display": "Visit"}]
    assert change.referral.outputs == (Link("appointment", "Appointment/5", "Visit"),)
    # linking the same output twice keeps one
    again = transition(change.referral, Command(
        "link", changes={"add_outputs": [Link("appointment", "Appointment/5")]}))
    assert len(again.referral.outputs) == 1


def test_record_outreach_counts_attempts_and_authorize_sets_auth_state() -> None:
    once = transition(in_stage("outreach"), command("record-outreach")).referral
    twice = transition(once, command("record-outreach")).referral
    assert twice.outreach_attempts == 2 and twice.stage == Stage.OUTREACH
    authorized = transition(in_stage("auth-pending"), command("authorize")).referral
    assert authorized.auth_state == "approved"


def test_times_are_stored_as_utc_milliseconds() -> None:
    eastern = datetime(2026, 3, 2, 4, 30, 0, 123456, tzinfo=timezone(timedelta(hours=-5)))
    assert moment(eastern) == datetime(2026, 3, 2, 9, 30, 0, 123000, tzinfo=UTC)
    assert moment(datetime(2026, 3, 2, 9, 30)) == datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    new = transition(in_stage("accepted"), Command("schedule", at=eastern)).referral
    assert new.updated_at == datetime(2026, 3, 2, 9, 30, 0, 123000, tzinfo=UTC)
    assert to_task(new)["meta"]["lastUpdated"] == "2026-03-02T09:30:00.123Z"


def test_changes_while_on_hold_keep_the_held_stage() -> None:
    on_hold = transition(in_stage("scheduled").evolve(status_reason=None), command("hold"))
    assigned = transition(on_hold.referral, Command(
        "assign", changes={"owner": "PractitionerRole/2"})).referral
    assert assigned.held_from == Stage.SCHEDULED and bser_code(assigned) == "5.1.1"
    assert assigned.status_reason == Reason("why", "Because")
    resumed = transition(assigned, command("resume", reason=False)).referral
    assert resumed.stage == Stage.SCHEDULED and resumed.owner == "PractitionerRole/2"
