"""Service-level deadlines: how long a referral may stay in a stage (Task.restriction.period.end).

Hold pauses the clock (no deadline); terminal stages have none.
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
    if referral.stage in TERMINAL_STAGES or referral.stage == Stage.ON_HOLD:
        return None
    hours = _HOURS_BY_PRIORITY.get(referral.priority, 72) * _STAGE_FACTOR.get(referral.stage, 1)
    return now + timedelta(hours=hours)
