"""Server-side SVG for the dashboard (no CDN, no script): the stage funnel and the aging chart.
Labels are escaped by the template engine; numbers are computed here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from referrals.store.database import Database
from referrals.store.referrals import from_sources
from referrals.store.schema import referrals
from referrals.worklist import OPEN_STAGES

AGE_BUCKETS = ((0, 2, "0-2 d"), (3, 7, "3-7 d"), (8, 14, "8-14 d"), (15, 30, "15-30 d"),
               (31, None, "over 30 d"))


@dataclass(frozen=True)
class Bar:
    label: str
    count: int
    x: float
    y: float
    width: float
    height: float
    percent: str


def funnel_bars(steps: list[tuple[str, int]], *, width: float = 320, row: float = 28
                ) -> list[Bar]:
    """Horizontal bars, longest for the first step; percent of the first step."""
    top = max((count for _, count in steps), default=0) or 1
    first = steps[0][1] if steps and steps[0][1] else 1
    bars = []
    for index, (label, count) in enumerate(steps):
        length = width * count / top
        bars.append(Bar(label, count, 0.0, index * row, round(length, 1), row - 6,
                        f"{100 * count / first:.0f}%"))
    return bars


def aging_buckets(db: Database, now: datetime, sources: tuple[str, ...] | None = None
                  ) -> list[tuple[str, int]]:
    """Open referrals by days since created (of these `sources` only, when given)."""
    counts = []
    with db.read() as c:
        for low, high, label in AGE_BUCKETS:
            query = sa.select(sa.func.count()).select_from(referrals).where(
                referrals.c.stage.in_(OPEN_STAGES),
                referrals.c.created_at <= now - _days(low))
            if sources is not None:
                query = query.where(from_sources(referrals.c.source_key, sources))
            if high is not None:
                query = query.where(referrals.c.created_at > now - _days(high + 1))
            counts.append((label, int(c.execute(query).scalar_one())))
    return counts


def column_bars(buckets: list[tuple[str, int]], *, height: float = 120, column: float = 56
                ) -> list[Bar]:
    """Vertical bars for the aging chart (y grows downwards in SVG)."""
    top = max((count for _, count in buckets), default=0) or 1
    total = sum(count for _, count in buckets) or 1
    bars = []
    for index, (label, count) in enumerate(buckets):
        tall = height * count / top
        bars.append(Bar(label, count, index * column, height - tall, column - 12, round(tall, 1),
                        f"{100 * count / total:.0f}%"))
    return bars


def _days(n: int) -> timedelta:
    return timedelta(days=n)
