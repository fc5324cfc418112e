"""The referral lifecycle: one explicit transition table and a pure `transition()`.

BSeR/360X closed-loop statuses are the external contract; our operational stages (triage,
coverage check, prior authorization, outreach, on-hold, failed) refine them (landscape.md §2.6).
Nothing here does I/O: callers store the result.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from referrals import closed_loop as loop
from referrals.errors import IllegalTransition
from referrals.model import (
    PRIORITIES,
    TERMINAL_STAGES,
    Clock,
    Command,
    Event,
    Link,
    Referral,
    Stage,
)
from referrals.sla import deadline_after_clocks, deadline_for

S = Stage

#: Stages in which the patient is in care of the recipient (BSeR accepted or 5.1.x).
IN_CARE = frozenset({
    S.ACCEPTED, S.COVERAGE_CHECK, S.AUTH_PENDING, S.OUTREACH,
    S.SCHEDULED, S.NO_SHOW, S.APPOINTMENT_CANCELLED, S.VISIT_COMPLETED,
})
#: Stages that refine BSeR 3.0 "accepted": what a partner may do from 3.0 it may do from these.
BSER_ACCEPTED = frozenset({S.ACCEPTED, S.COVERAGE_CHECK, S.AUTH_PENDING, S.OUTREACH})
OPEN = frozenset(set(Stage) - TERMINAL_STAGES)
ACTIVE = OPEN - {S.ON_HOLD}
#: the closed-loop records (referrals/closed_loop.py): the referrer is told, and receives the
#: report, after the loop closed or the referral failed, so these are allowed from every stage
EVERY = frozenset(Stage)

SAME = "same"          # the action keeps the stage
HELD_FROM = "held-from"  # resume returns to the stage the hold came from


@dataclass(frozen=True)
class Rule:
    sources: frozenset[Stage]
    target: Stage | str
    needs_reason: bool = False
    why_not: str = ""


#: action -> which stages it may start from, where it goes, whether a reason is required.
TABLE: dict[str, Rule] = {
    "triage": Rule(frozenset({S.DETECTED}), S.TRIAGE,
                   why_not="only a newly detected referral can be claimed for triage"),
    "accept": Rule(frozenset({S.DETECTED, S.TRIAGE}), S.ACCEPTED,
                   why_not="only a referral awaiting a decision can be accepted"),
    "decline": Rule(frozenset({S.DETECTED, S.TRIAGE}) | IN_CARE, S.DECLINED, needs_reason=True,
                    why_not="a referral can be declined only before its outcome is known"),
    "check-coverage": Rule(frozenset({S.ACCEPTED}), S.COVERAGE_CHECK,
                           why_not="coverage is checked right after acceptance"),
    "request-authorization": Rule(frozenset({S.ACCEPTED, S.COVERAGE_CHECK}), S.AUTH_PENDING,
                                  why_not="prior authorization follows acceptance or the "
                                  "coverage check"),
    "authorize": Rule(frozenset({S.AUTH_PENDING}), S.OUTREACH,
                      why_not="only a referral waiting for prior authorization can be authorized"),
    "start-outreach": Rule(frozenset({S.ACCEPTED, S.COVERAGE_CHECK, S.NO_SHOW,
                                      S.APPOINTMENT_CANCELLED}), S.OUTREACH,
                           why_not="outreach starts once the referral is accepted and clear of "
                           "pending authorization"),
    "record-outreach": Rule(frozenset({S.OUTREACH, S.NO_SHOW, S.APPOINTMENT_CANCELLED}), SAME,
                            why_not="outreach attempts are recorded while the patient is being "
                            "contacted"),
    "schedule": Rule(frozenset({S.ACCEPTED, S.COVERAGE_CHECK, S.AUTH_PENDING, S.OUTREACH,
                                S.SCHEDULED, S.NO_SHOW, S.APPOINTMENT_CANCELLED,
                                S.VISIT_COMPLETED}), S.SCHEDULED,
                     why_not="a visit can be scheduled only for an accepted referral"),
    "no-show": Rule(frozenset({S.SCHEDULED}), S.NO_SHOW,
                    why_not="a no-show needs a scheduled appointment"),
    "cancel-appointment": Rule(frozenset({S.SCHEDULED, S.VISIT_COMPLETED}),
                               S.APPOINTMENT_CANCELLED,
                               why_not="there is no scheduled appointment to cancel"),
    "complete-visit": Rule(BSER_ACCEPTED | {S.SCHEDULED, S.VISIT_COMPLETED},
                           S.VISIT_COMPLETED,
                           why_not="a visit is completed from an accepted or scheduled referral"),
    "close-loop": Rule(BSER_ACCEPTED | {S.SCHEDULED, S.VISIT_COMPLETED, S.CANCEL_REQUESTED},
                       S.LOOP_CLOSED,
                       why_not="the loop closes with the outcome of an accepted referral"),
    "request-cancel": Rule(OPEN - {S.CANCEL_REQUESTED}, S.CANCEL_REQUESTED,
                           why_not="the referral is already finished or being cancelled"),
    "cancel": Rule(frozenset({S.CANCEL_REQUESTED, S.DETECTED, S.TRIAGE}), S.CANCELLED,
                   needs_reason=True,
                   why_not="an accepted referral is cancelled through a cancellation request"),
    "hold": Rule(ACTIVE - {S.CANCEL_REQUESTED}, S.ON_HOLD, needs_reason=True,
                 why_not="only an active referral can be put on hold"),
    "resume": Rule(frozenset({S.ON_HOLD}), HELD_FROM, why_not="the referral is not on hold"),
    "fail": Rule(OPEN, S.FAILED, needs_reason=True, why_not="the referral is already finished"),
    "assign": Rule(OPEN, SAME, why_not="a finished referral has no owner to change"),
    "amend": Rule(OPEN, SAME, why_not="a finished referral cannot be amended"),
    "link": Rule(OPEN, SAME, why_not="a finished referral takes no new inputs or outputs"),
    loop.CHASE_NOTE: Rule(frozenset({S.VISIT_COMPLETED}), SAME,
                          why_not="the consult note is chased after the visit, until it arrives"),
    loop.UPDATE_REFERRER: Rule(EVERY, SAME),
    loop.SEND_NOTE: Rule(EVERY, SAME),
    loop.RECORD_RECEIPT: Rule(EVERY, SAME),
    loop.START_CLOCK: Rule(EVERY, SAME),
    loop.MEET_CLOCK: Rule(EVERY, SAME),
    loop.MISS_CLOCK: Rule(EVERY, SAME),
}

#: Fields a command may set through `changes`.
CHANGEABLE = frozenset({
    "owner", "priority", "specialty", "reason_text", "payer", "auth_state", "deadline",
    "requester", "performer", "patient", "service_request", "identifiers",
})


@dataclass(frozen=True)
class Transition:
    referral: Referral
    event: Event


def allowed_actions(stage: Stage) -> list[str]:
    """Actions the table allows from `stage` (for menus and explanations)."""
    return [action for action, rule in TABLE.items() if stage in rule.sources]


def start(draft: Referral, command: Command) -> Transition:
    """Open a referral: the first event ("detect"), BSeR 2.0 created."""
    if draft.version != 0:
        raise IllegalTransition("detect", draft.stage, "the referral exists already")
    at = moment(command.at)
    referral = _apply_changes(draft, command.changes, "detect").evolve(
        stage=S.DETECTED, created_at=at, updated_at=at, version=1,
    )
    referral = referral.evolve(deadline=referral.deadline or deadline_for(referral, at))
    return Transition(referral, _event(referral, command, None, 1, at))


def transition(referral: Referral, command: Command) -> Transition:
    """Apply `command` to `referral`; return the new state and its event, or raise."""
    rule = TABLE.get(command.action)
    if rule is None:
        raise IllegalTransition(command.action, referral.stage, "no such action")
    if referral.stage not in rule.sources:
        why = "the referral is finished" if referral.terminal else rule.why_not
        raise IllegalTransition(command.action, referral.stage, why)
    if rule.needs_reason and command.reason is None:
        raise IllegalTransition(command.action, referral.stage, "a reason is required")
    target = _target(referral, rule)
    changed = _apply_changes(referral, command.changes, command.action)
    at = moment(command.at)
    updates: dict[str, Any] = {
        "stage": target, "updated_at": at, "version": referral.version + 1,
    }
    if target == S.ON_HOLD and referral.stage != S.ON_HOLD:
        updates["held_from"] = referral.stage
    elif target != S.ON_HOLD:
        updates["held_from"] = None
    if rule.needs_reason or (target == S.ON_HOLD and command.reason is not None):
        updates["status_reason"] = command.reason
    elif target != referral.stage:
        updates["status_reason"] = None
    if command.action == "record-outreach":
        updates["outreach_attempts"] = referral.outreach_attempts + 1
    if command.action == "authorize" and "auth_state" not in command.changes:
        updates["auth_state"] = "approved"
    new = changed.evolve(**updates)
    if target != referral.stage and "deadline" not in command.changes:
        new = new.evolve(deadline=deadline_for(new, at))
    elif "clock" in command.changes and "deadline" not in command.changes:
        new = new.evolve(deadline=deadline_after_clocks(referral, new, at))
    return Transition(new, _event(new, command, referral.stage, new.version, at))


def moment(at: datetime) -> datetime:
    """A command's time as stored: aware UTC, millisecond precision (FHIR instants show ms).

    Naive datetimes are taken to be UTC. Truncating to the millisecond keeps the stored time equal
    to Task.meta.lastUpdated, so `_lastUpdated` searches match what clients see.
    """
    aware = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return aware.replace(microsecond=aware.microsecond // 1000 * 1000)


def _target(referral: Referral, rule: Rule) -> Stage:
    if rule.target == SAME:
        return referral.stage
    if rule.target == HELD_FROM:
        return referral.held_from or S.ACCEPTED
    return Stage(rule.target)


def _apply_changes(referral: Referral, changes: dict[str, Any], action: str) -> Referral:
    unknown = set(changes) - CHANGEABLE - {"add_inputs", "add_outputs"}
    if action in loop.LOOP_ACTIONS and "details" in changes:
        if not isinstance(changes["details"], dict):
            raise IllegalTransition(action, referral.stage, "details must be a mapping")
        unknown -= {"details"}
    if action in loop.CLOCK_ACTIONS:
        if not isinstance(changes.get("clock"), dict):
            raise IllegalTransition(action, referral.stage, "a clock action needs "
                                    "changes={'clock': {'program': ..., ...}}")
        unknown -= {"clock"}
    if unknown:
        raise IllegalTransition(action, referral.stage,
                                f"unknown fields {sorted(unknown)}; changeable: "
                                f"{', '.join(sorted(CHANGEABLE))}, add_inputs, add_outputs")
    if action in loop.CLOCK_ACTIONS:
        referral = _clock_change(referral, action, changes["clock"])
    plain = {k: v for k, v in changes.items() if k in CHANGEABLE}
    if "identifiers" in plain:
        plain["identifiers"] = tuple(tuple(i) for i in plain["identifiers"])
    if isinstance(plain.get("deadline"), datetime):
        plain["deadline"] = moment(plain["deadline"])
    new = referral.evolve(**plain) if plain else referral
    if new.priority not in PRIORITIES:
        raise IllegalTransition(action, referral.stage,
                                f"priority {new.priority!r} is not one of {', '.join(PRIORITIES)}")
    if changes.get("add_inputs"):
        new = new.evolve(inputs=_merge(new.inputs, changes["add_inputs"]))
    if changes.get("add_outputs"):
        new = new.evolve(outputs=_merge(new.outputs, changes["add_outputs"]))
    return new


def _clock_change(referral: Referral, action: str, clock: dict[str, Any]) -> Referral:
    """Start a program's clock, or mark it met or missed (one clock per program)."""
    program = str(clock.get("program") or "")
    if program not in loop.PROGRAMS:
        raise IllegalTransition(action, referral.stage, f"unknown program {program!r}; "
                                f"known: {', '.join(loop.PROGRAMS)}")
    current = referral.clock(program)
    if action == loop.START_CLOCK:
        if current is not None:
            raise IllegalTransition(action, referral.stage,
                                    f"the referral already has a {program} clock")
        goal = str(clock.get("goal") or "")
        if goal not in loop.GOALS:
            raise IllegalTransition(action, referral.stage,
                                    f"goal must be one of {', '.join(loop.GOALS)}")
        started, due = _when(clock, "started_at", action, referral), \
            _when(clock, "due_at", action, referral)
        if due < started:
            raise IllegalTransition(action, referral.stage, "a clock cannot be due before it "
                                    "starts")
        return referral.evolve(clocks=(*referral.clocks, Clock(program, goal, started, due)))
    if current is None:
        raise IllegalTransition(action, referral.stage, f"the referral has no {program} clock")
    at = _when(clock, "at", action, referral)
    if action == loop.MEET_CLOCK:
        if current.met_at is not None:
            raise IllegalTransition(action, referral.stage, f"the {program} clock was met "
                                    "already")
        updated = replace(current, met_at=at)
    else:
        if not current.open:
            raise IllegalTransition(action, referral.stage, f"the {program} clock has "
                                    "ended already")
        updated = replace(current, missed_at=at)
    return referral.evolve(clocks=tuple(updated if c.program == program else c
                                        for c in referral.clocks))


def _when(clock: dict[str, Any], key: str, action: str, referral: Referral) -> datetime:
    value = clock.get(key)
    try:
        parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise IllegalTransition(action, referral.stage, f"clock {key} {value!r} is not a "
                                "date and time") from exc
    return moment(parsed)


def _merge(existing: tuple[Link, ...], added: list[Link]) -> tuple[Link, ...]:
    seen = {(link.type, link.reference) for link in existing}
    fresh = [link for link in added if (link.type, link.reference) not in seen]
    return existing + tuple(fresh)


def _event(referral: Referral, command: Command, from_stage: Stage | None, seq: int,
           at: datetime) -> Event:
    data = {k: _plain(v) for k, v in command.changes.items() if k != "details"}
    # a closed-loop record's details (channel, milestone...) are the event's own data
    data.update(_plain(command.changes.get("details") or {}))
    return Event(
        referral_id=referral.id, seq=seq, action=command.action if from_stage else "detect",
        from_stage=from_stage, to_stage=referral.stage, actor=command.actor, at=at,
        reason=command.reason, source=command.source, source_message=command.source_message,
        data=data,
    )


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Link):
        return {"type": value.type, "reference": value.reference, "display": value.display}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
