"""The figures of a set of referral facts with exact percentiles (the report, and dashboard views
counted from the facts).

Each referral's share (`Point`: its cohort, its counts, its durations) is worked out once from
the definitions in analytics.metrics, however many groups it is then summed into: the report
sums the same referrals overall and by each dimension, and the counts of a group are column
sums of plain tuples.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

from analytics.facts import Facts
from analytics.metrics import (
    DURATIONS,
    Histogram,
    Spread,
    Totals,
    bin_of,
    cohort_start,
    drop_key,
    duration_hours,
    spread,
    totals_of,
)

COUNT_FIELDS = tuple(f.name for f in fields(Totals))
DURATION_NAMES = tuple(DURATIONS)


@dataclass(frozen=True)
class Point:
    """One referral's share of a summary."""

    #: the first day of its cohort (YYYY-MM-DD)
    start: str
    #: its counts, COUNT_FIELDS order
    counts: tuple[int, ...]
    #: its durations in hours, DURATION_NAMES order (None: it did not happen)
    hours: tuple[float | None, ...]
    #: the histogram bins of those durations
    bins: tuple[int | None, ...]
    #: (last step reached, how it ended, reason) when it ended without a visit
    drop: tuple[str, str, str] | None


def point_of(facts: Facts, grain: str) -> Point:
    totals = totals_of(facts)
    hours = tuple(duration_hours(facts, name) for name in DURATION_NAMES)
    return Point(cohort_start(facts.detected_at, grain),
                 tuple(getattr(totals, name) for name in COUNT_FIELDS), hours,
                 tuple(None if h is None else bin_of(h) for h in hours), drop_key(facts))


@dataclass
class Summary:
    """The figures of a set of points: overall, by cohort (first day -> totals, spreads)."""

    totals: Totals
    spreads: dict[str, Spread]
    histograms: dict[str, Histogram]
    cohorts: list[tuple[str, Totals, dict[str, Spread]]]
    dropoff: dict[tuple[str, str, str], int]


def summary(points: Sequence[Point]) -> Summary:
    groups: dict[str, list[Point]] = {}
    for point in points:
        groups.setdefault(point.start, []).append(point)
    cohorts = [(start, counted(members), spreads(members))
               for start, members in sorted(groups.items())]
    overall = counted(points)
    dropoff: dict[tuple[str, str, str], int] = {}
    for point in points:
        if point.drop is not None:
            dropoff[point.drop] = dropoff.get(point.drop, 0) + 1
    return Summary(overall, spreads(points), histograms(points), cohorts, dropoff)


def counted(points: Iterable[Point]) -> Totals:
    columns = list(zip(*(p.counts for p in points), strict=True))
    return Totals(*(sum(column) for column in columns)) if columns else Totals()


def durations(points: Iterable[Point]) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {name: [] for name in DURATION_NAMES}
    lists = [values[name] for name in DURATION_NAMES]
    for point in points:
        for target, hours in zip(lists, point.hours, strict=True):
            if hours is not None:
                target.append(hours)
    return values


def spreads(points: Iterable[Point]) -> dict[str, Spread]:
    return {name: spread(values) for name, values in durations(points).items()}


def histograms(points: Iterable[Point]) -> dict[str, Histogram]:
    found = {name: Histogram() for name in DURATION_NAMES}
    counts = [found[name].counts for name in DURATION_NAMES]
    for point in points:
        for target, index in zip(counts, point.bins, strict=True):
            if index is not None:
                target[index] = target.get(index, 0) + 1
    return found
