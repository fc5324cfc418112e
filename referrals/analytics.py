"""Completion analytics from the event log: the stage funnel and where referrals fall out."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from referrals.store.database import Database
from referrals.store.referrals import from_sources
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


def funnel(db: Database, sources: tuple[str, ...] | None = None) -> list[FunnelStep]:
    """How many referrals reached each step; `sources`: only referrals of these sources."""
    steps = []
    with db.read() as c:
        for name, actions in FUNNEL:
            query = sa.select(sa.func.count(sa.distinct(referral_events.c.referral_id))).where(
                referral_events.c.action.in_(sorted(actions)))
            if sources is not None:
                query = query.where(referral_events.c.referral_id.in_(sa.select(
                    referrals.c.id).where(from_sources(referrals.c.source_key, sources))))
            count = c.execute(query).scalar_one()
            steps.append(FunnelStep(name, int(count)))
    return steps


def fall_out(db: Database, sources: tuple[str, ...] | None = None) -> dict[str, int]:
    query = sa.select(referrals.c.stage, sa.func.count()).where(referrals.c.stage.in_(FALL_OUT))
    if sources is not None:
        query = query.where(from_sources(referrals.c.source_key, sources))
    with db.read() as c:
        rows = c.execute(query.group_by(referrals.c.stage)).all()
    return {stage: int(count) for stage, count in rows}
