"""Service-level deadlines: how long a referral may stay in a stage (Task.restriction.period.end).

Hold pauses the stage's clock; terminal stages have no deadline. A program clock (TEAM, ASM:
referrals/closed_loop.py) that is still running caps the deadline at its due time, on hold too:
a regulatory clock does not pause.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from referrals.model import TERMINAL_STAGES, Referral, Stage

_HOURS_BY_PRIORITY = {"stat": 1, "asap": 4, "urgent": 24, "routine": 72}

#: Multiplier on the priority's base window for each stage.
_STAGE_FACTOR = {
    Stage.DETECTED: 1, Stage.TRIAGE: 1, Stage.ACCEPTED: 1, Stage.COVERAGE_CHECK: 1,
    Stage.AUTH_PENDING: 3, Stage.OUTREACH: 2, Stage.NO_SHOW: 1, Stage.APPOINTMENT_CANCELLED: 1,
    Stage.SCHEDULED: 10, Stage.VISIT_COMPLETED: 2, Stage.CANCEL_REQUESTED: 1,
}


def deadline_for(referral: Referral, now: datetime) -> datetime | None:
    """The deadline of a referral entering its stage at `now`."""
    if referral.stage in TERMINAL_STAGES:
        return None
    program_due = clock_due(referral)
    if referral.stage == Stage.ON_HOLD:
        return program_due
    hours = _HOURS_BY_PRIORITY.get(referral.priority, 72) * _STAGE_FACTOR.get(referral.stage, 1)
    stage_due = now + timedelta(hours=hours)
    return min(stage_due, program_due) if program_due else stage_due


def clock_due(referral: Referral) -> datetime | None:
    """When the earliest running program clock is due (None: no clock is running)."""
    return min((c.due_at for c in referral.clocks if c.open), default=None)


def deadline_after_clocks(before: Referral, after: Referral, now: datetime) -> datetime | None:
    """The deadline once a clock started, was met or missed, in the same stage.

    A new clock may bring the deadline forward; when the clock that held the deadline ends,
    the stage's own window starts again from `now` (its original start is not kept)."""
    if after.stage in TERMINAL_STAGES:
        return None
    ended = [c for c in before.clocks if c.open and not _still_open(after, c.program)]
    if before.deadline is not None and any(c.due_at == before.deadline for c in ended):
        return deadline_for(after, now)
    due = clock_due(after)
    candidates = [d for d in (before.deadline, due) if d is not None]
    return min(candidates) if candidates else None


def _still_open(referral: Referral, program: str) -> bool:
    clock = referral.clock(program)
    return clock is not None and clock.open


def describe_due(deadline: datetime | None, now: datetime) -> tuple[str, bool]:
    """How a deadline reads to people, and whether it has passed: hours up to 48, whole days
    beyond ("5 h", "3 d", "overdue 7 h", "overdue 38 d"); "-" without a deadline."""
    if deadline is None:
        return "-", False
    hours = (deadline - now).total_seconds() / 3600
    span = f"{abs(hours) / 24:.0f} d" if abs(hours) > 48 else f"{abs(hours):.0f} h"
    return (f"overdue {span}", True) if hours < 0 else (span, False)
