"""Completion analytics from the event log: the stage funnel and where referrals fall out."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from referrals.store.database import Database
from referrals.store.schema import referral_events, referrals

#: funnel step -> the actions whose presence means a referral reached it
FUNNEL: list[tuple[str, frozenset[str]]] = [
    ("created", frozenset({"detect"})),
    ("accepted", frozenset({"accept"})),
    ("authorized", frozenset({"authorize", "start-outreach", "schedule", "complete-visit",
                              "close-loop"})),
    ("contacted", frozenset({"start-outreach", "record-outreach", "schedule"})),
    ("scheduled", frozenset({"schedule"})),
    ("visit completed", frozenset({"complete-visit", "close-loop"})),
    ("loop closed", frozenset({"close-loop"})),
]
FALL_OUT = ["declined", "cancelled", "failed", "on-hold"]


@dataclass(frozen=True)
class FunnelStep:
    name: str
    count: int


def funnel(db: Database) -> list[FunnelStep]:
    steps = []
    with db.read() as c:
        for name, actions in FUNNEL:
            count = c.execute(sa.select(sa.func.count(sa.distinct(referral_events.c.referral_id)))
                              .where(referral_events.c.action.in_(sorted(actions)))).scalar_one()
            steps.append(FunnelStep(name, int(count)))
    return steps


def fall_out(db: Database) -> dict[str, int]:
    with db.read() as c:
        rows = c.execute(sa.select(referrals.c.stage, sa.func.count())
                         .where(referrals.c.stage.in_(FALL_OUT))
                         .group_by(referrals.c.stage)).all()
    return {stage: int(count) for stage, count in rows}
