"""The figures of the outcomes dashboard and the report, read from the rollups.

Two ways to the same definitions: the cube (a cohort's counts and duration histograms per value
of one dimension) answers a view with at most one dimension filter, whatever the store's size;
a view with more filters, or limited to a tenant's referral sources, is counted from the facts of
the referrals it selects (exact percentiles). `Outcomes.exact` says which.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from analytics import sqlfacts
from analytics.contribution import (
    DEADLINES,
    DIMENSIONS,
    day_number,
    ordered_pair,
    pair_dim,
    pair_prefix,
    pair_suffix,
    pair_value,
)
from analytics.facts import Facts
from analytics.metrics import (
    DURATIONS,
    STEPS,
    Histogram,
    Spread,
    Totals,
    cohort,
    cohort_start,
    spread_of,
)
from analytics.summary import Point, point_of, summary
from analytics.tables import COUNT_COLUMNS, analytics_cube, analytics_dropoff, analytics_facts
from referrals.store.database import Database
from referrals.store.referrals import from_sources

GRAIN_CODES = {"week": "w", "month": "m"}
BREAKDOWN_ROWS = 50


@dataclass(frozen=True)
class Filters:
    """Which referrals: detected between `since` and `until` (days, inclusive; a cohort is in
    when its first day is), of the dimension values in `where`; broken down by `breakdown`."""

    grain: str = "month"
    since: date | None = None
    until: date | None = None
    where: tuple[tuple[str, str], ...] = ()
    breakdown: str = "referrer"
    #: only referrals whose source key starts with one of these ("<source>|"); None: all
    sources: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.grain not in GRAIN_CODES:
            raise ValueError(f"grain must be week or month, not {self.grain!r}")
        if self.breakdown not in DIMENSIONS:
            raise ValueError(f"breakdown must be one of {', '.join(DIMENSIONS)}")
        for dim, _value in self.where:
            if dim not in DIMENSIONS:
                raise ValueError(f"no dimension {dim!r}; use {', '.join(DIMENSIONS)}")

    @property
    def by_cube(self) -> bool:
        return self.sources is None and self.cube_key() is not None

    def cube_key(self) -> tuple[str, str] | None:
        """The cube cells (dim, value) of this view's referrals: no filter, one, or two on
        different dimensions by month; None: the cube does not hold them."""
        if not self.where:
            return "all", ""
        if len(self.where) == 1:
            return self.where[0]
        pair = ordered_pair(self.where)
        if pair is None or self.grain != "month":
            return None
        (a, first), (b, second) = pair
        return pair_dim(a, b), pair_value(first, second)


@dataclass
class CohortFigures:
    label: str
    start: str
    totals: Totals
    spreads: dict[str, Spread]


@dataclass
class Outcomes:
    filters: Filters
    cohorts: list[CohortFigures]
    totals: Totals
    spreads: dict[str, Spread]
    histograms: dict[str, Histogram]
    #: (last step reached, outcome, reason code, referrals), most first
    dropoff: list[tuple[str, str, str, int]]
    open: int
    overdue: int
    breakdown: list[tuple[str, Totals]]
    exact: bool
    computed_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def overdue_share(self) -> float | None:
        return self.overdue / self.open if self.open else None


def outcomes(db: Database, filters: Filters, now: datetime | None = None) -> Outcomes:
    now = now or datetime.now(UTC)
    with db.read() as c:
        found = _from_cube(c, filters, now) if filters.by_cube else _from_facts(c, filters)
        if not (filters.by_cube and _cube_breakdown_fits(filters)):
            found.breakdown = _breakdown_from_facts(c, filters)
        if filters.by_cube:  # the cube counted the deadlines of days before today
            found.overdue += _overdue_today(c, filters, now)
        else:
            found.overdue = _overdue(c, filters, now)
    found.computed_at = now
    return found


# -- the cube --------------------------------------------------------------------------------


def _period_range(column: Any, filters: Filters) -> list[sa.ColumnElement[bool]]:
    clauses = []
    if filters.since is not None:
        clauses.append(column >= cohort_start(_day(filters.since), filters.grain))
    if filters.until is not None:
        clauses.append(column <= filters.until.isoformat())
    return clauses


def _from_cube(c: Connection, filters: Filters, now: datetime) -> Outcomes:
    grain = GRAIN_CODES[filters.grain]
    key = filters.cube_key()
    assert key is not None
    dim, value = key
    cube = analytics_cube.c
    rows = c.execute(sa.select(analytics_cube).where(
        cube.grain == grain, cube.dim == dim, cube.value == value,
        *_period_range(cube.period, filters)).order_by(cube.period)).mappings().all()
    cohorts, overall = [], Totals()
    histograms: dict[str, Histogram] = {name: Histogram() for name in DURATIONS}
    today, overdue = day_number(now), 0
    for row in rows:
        totals = Totals(**{name: int(row[name]) for name in COUNT_COLUMNS})
        if not totals.referrals:
            continue
        own: dict[str, Histogram] = {}
        stored = dict(row["histograms"] or {})
        overdue += sum(int(n) for day, n in stored.pop(DEADLINES, {}).items()
                       if int(day) < today)
        for name, bins in stored.items():
            own[name] = Histogram({int(k): int(v) for k, v in bins.items()})
            histograms.setdefault(name, Histogram()).merge(own[name])
        overall.add(totals)
        start = row["period"]
        cohorts.append(CohortFigures(
            cohort(_day(date.fromisoformat(start)), filters.grain), start, totals,
            {name: spread_of(own.get(name, Histogram())) for name in DURATIONS}))
    drop = analytics_dropoff.c
    drops = c.execute(sa.select(drop.step, drop.outcome, drop.reason, sa.func.sum(drop.n))
                      .where(drop.grain == grain, drop.dim == dim, drop.value == value,
                             *_period_range(drop.period, filters))
                      .group_by(drop.step, drop.outcome, drop.reason)).all()
    breakdown = _cube_breakdown(c, filters) if _cube_breakdown_fits(filters) else []
    return Outcomes(filters, cohorts, overall,
                    {name: spread_of(h) for name, h in histograms.items()}, histograms,
                    _ordered_drops((s, o, r, int(n)) for s, o, r, n in drops if n),
                    overall.open, overdue, breakdown, exact=False)


def _cube_breakdown_fits(filters: Filters) -> bool:
    """The cube answers the breakdown when there is no filter, when the filters include the
    breakdown's own dimension (one row: the view's value), or for one filter on another
    dimension by month (from the cells of the pair)."""
    if not filters.where or filters.breakdown in dict(filters.where):
        return True
    return len(filters.where) == 1 and filters.grain == "month"


def _cube_breakdown(c: Connection, filters: Filters) -> list[tuple[str, Totals]]:
    cube = analytics_cube.c
    chosen = dict(filters.where)
    clauses, position = _breakdown_cells(filters)
    sums = [sa.func.sum(cube[name]).label(name) for name in COUNT_COLUMNS]
    rows = c.execute(sa.select(cube.value, *sums).where(
        cube.grain == GRAIN_CODES[filters.grain], *clauses,
        *_period_range(cube.period, filters)).group_by(cube.value)).all()
    found: list[tuple[str, Totals]] = []
    for row in rows:
        if row.referrals:
            value = chosen[filters.breakdown] if filters.breakdown in chosen else \
                row.value if position is None else json.loads(row.value)[position]
            found.append((value, Totals(**{name: int(getattr(row, name))
                                           for name in COUNT_COLUMNS})))
    found.sort(key=lambda pair: (-pair[1].referrals, pair[0]))
    return found[:BREAKDOWN_ROWS]


def _breakdown_cells(filters: Filters) -> tuple[list[sa.ColumnElement[bool]], int | None]:
    """The cube cells of a breakdown, and where in a pair's value the breakdown's value sits
    (None: the cell's value is the breakdown's)."""
    cube = analytics_cube.c
    if filters.breakdown in dict(filters.where):
        key = filters.cube_key()
        assert key is not None
        return [cube.dim == key[0], cube.value == key[1]], None
    if filters.where:
        return _pair_clauses(filters.where[0], filters.breakdown)
    return [cube.dim == filters.breakdown], None


def _pair_clauses(where: tuple[str, str], breakdown: str
                  ) -> tuple[list[sa.ColumnElement[bool]], int]:
    """The pair cells of one filter's value, each with one value of `breakdown`, and where the
    breakdown's value sits in the pair (0 or 1)."""
    cube = analytics_cube.c
    dim, value = where
    if DIMENSIONS.index(dim) < DIMENSIONS.index(breakdown):
        return [cube.dim == pair_dim(dim, breakdown),
                cube.value.startswith(pair_prefix(value), autoescape=True)], 1
    return [cube.dim == pair_dim(breakdown, dim),
            cube.value.endswith(pair_suffix(value), autoescape=True)], 0


# -- the facts -------------------------------------------------------------------------------

def detected_range(filters: Filters) -> tuple[datetime | None, datetime | None]:
    """The view's referrals were detected from the first (inclusive) to the second."""
    low = None if filters.since is None else _day(date.fromisoformat(
        cohort_start(_day(filters.since), filters.grain)))
    high = (None if filters.until is None or filters.until == date.max
            else _day(filters.until) + timedelta(days=1))
    return low, high


def facts_clauses(filters: Filters) -> list[sa.ColumnElement[bool]]:
    """The referrals a view selects, as conditions on analytics_facts."""
    f = analytics_facts.c
    clauses: list[sa.ColumnElement[bool]] = []
    low, high = detected_range(filters)
    if low is not None:
        clauses.append(f.detected_at >= low)
    if high is not None:
        clauses.append(f.detected_at < high)
    clauses.extend(f[dim] == value for dim, value in filters.where)
    if filters.sources is not None:
        clauses.append(from_sources(f.source_key, filters.sources))
    return clauses


def _from_facts(c: Connection, filters: Filters) -> Outcomes:
    rows = c.execute(sa.select(analytics_facts).where(*facts_clauses(filters))
                     .order_by(analytics_facts.c.detected_at)).mappings()
    return summarize((Facts.from_row(row) for row in rows), filters)


def summarize(many: Iterable[Facts], filters: Filters) -> Outcomes:
    """The figures of a set of facts, with exact percentiles."""
    return summarize_points([point_of(facts, filters.grain) for facts in many], filters)


def summarize_points(points: Sequence[Point], filters: Filters) -> Outcomes:
    found = summary(points)
    cohorts = [CohortFigures(cohort(_day(date.fromisoformat(start)), filters.grain), start,
                             totals, own) for start, totals, own in found.cohorts]
    return Outcomes(filters, cohorts, found.totals, found.spreads, found.histograms,
                    _ordered_drops((*k, n) for k, n in found.dropoff.items()),
                    found.totals.open, 0, [], exact=True)


def _breakdown_from_facts(c: Connection, filters: Filters) -> list[tuple[str, Totals]]:
    column = analytics_facts.c[filters.breakdown]
    rows = c.execute(sa.select(column.label("value"), *sqlfacts.totals_columns())
                     .where(*facts_clauses(filters)).group_by(column)
                     .order_by(sa.desc("referrals"), column).limit(BREAKDOWN_ROWS)).all()
    return [(row.value, Totals(**{name: int(getattr(row, name)) for name in COUNT_COLUMNS}))
            for row in rows]


def _overdue(c: Connection, filters: Filters, now: datetime) -> int:
    """Open referrals of the view past their deadline."""
    return int(c.execute(sa.select(sa.func.count()).select_from(analytics_facts).where(
        sqlfacts.overdue(now), *facts_clauses(filters))).scalar_one())


def _overdue_today(c: Connection, filters: Filters, now: datetime) -> int:
    """Open referrals of a cube view whose deadline passed today. They are few: read by the
    deadline alone (its index) and matched to the view here, so that no database prefers a
    dimension's index and reads the whole dimension instead."""
    f = analytics_facts.c
    today = datetime.combine(now.date(), time(0), tzinfo=UTC)
    low, high = detected_range(filters)
    rows = c.execute(sa.select(f.detected_at, *(f[dim] for dim, _ in filters.where))
                     .where(sqlfacts.overdue(now), f.deadline >= today)).all()
    return sum(1 for row in rows
               if (low is None or row[0] >= low) and (high is None or row[0] < high)
               and all(row[i] == value for i, (_, value) in enumerate(filters.where, 1)))


# -- the referrals behind a number -------------------------------------------------------------

#: the parts of a view that link to their referrals (docs/metrics.md)
PARTS = ("referrals", "withdrawn", "accepted", "contacted", "scheduled", "visited", "notes",
         "receipts", "no_shows", "open", "overdue", "auth_requested", "auth_decided",
         *(f"{program}_{what}" for program in ("team", "asm")
           for what in ("started", "on_time", "late", "missed")))


@dataclass(frozen=True)
class ReferralRow:
    referral_id: str
    detected_at: datetime
    stage: str
    specialty: str
    referrer: str
    destination: str
    priority: str
    patient: str


def part_clause(part: str, now: datetime) -> sa.ColumnElement[bool]:
    """`part` is a Totals count name, `overdue`, or `dropped:<step>:<outcome>:<reason>`."""
    if part == "overdue":
        return sqlfacts.overdue(now)
    if part.startswith("dropped:"):
        _, step, outcome, reason = [*part.split(":", 3), "", "", ""][:4]
        if step not in STEPS:
            raise ValueError(f"no funnel step {step!r}")
        return sqlfacts.dropped(step, outcome, reason)
    if part not in PARTS:
        raise ValueError(f"no figure {part!r}; use one of {', '.join(PARTS)}")
    return sqlfacts.counted(part)


def referrals_behind(db: Database, filters: Filters, part: str, *, cohort_start_day: str = "",
                     after: tuple[datetime, str] | None = None, limit: int = 50,
                     now: datetime | None = None) -> list[ReferralRow]:
    """The referrals counted in `part` of the view (of one cohort when `cohort_start_day`), in
    detection order, a keyset page at a time (`after`: the last row's (detected_at, id))."""
    now = now or datetime.now(UTC)
    f = analytics_facts.c
    clauses = [*facts_clauses(filters), part_clause(part, now)]
    if cohort_start_day:
        start = _day(date.fromisoformat(cohort_start_day))
        clauses.append(f.detected_at >= start)
        end = _cohort_end(start, filters.grain)
        if end is not None:
            clauses.append(f.detected_at < end)
    if after is not None:
        clauses.append(sa.or_(f.detected_at > after[0],
                              sa.and_(f.detected_at == after[0], f.referral_id > after[1])))
    query = (sa.select(f.referral_id, f.detected_at, f.stage, f.specialty, f.referrer,
                       f.destination, f.priority, f.patient)
             .where(*clauses).order_by(f.detected_at, f.referral_id).limit(limit))
    with db.read() as c:
        return [ReferralRow(**row) for row in c.execute(query).mappings()]


# -- helpers ---------------------------------------------------------------------------------

def _ordered_drops(items: Iterable[tuple[str, str, str, int]]
                   ) -> list[tuple[str, str, str, int]]:
    return sorted(items, key=lambda d: (STEPS.index(d[0]), -d[3], d[1], d[2]))


def _day(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _cohort_end(start: datetime, grain: str) -> datetime | None:
    """Where the week or month that begins at `start` ends; None for the calendar's last one
    (year 9999), which runs to the calendar's end."""
    try:
        return start + timedelta(days=7) if grain == "week" else _next_month(start)
    except (OverflowError, ValueError):
        return None


def _next_month(start: datetime) -> datetime:
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


def dimension_menus(db: Database, limit: int = 200, *,
                    sources: tuple[str, ...] | None = None) -> dict[str, list[str]]:
    """The values of every dimension seen in the cube (for the filter menus), most referrals
    first, at most `limit` each: one statement for all the menus. Limited to `sources`, they
    are read from those referrals' facts instead (the cube sums every source)."""
    if sources is not None:
        return _source_menus(db, limit, sources)
    cube = analytics_cube.c
    ranked = (sa.select(cube.dim, cube.value, sa.func.row_number().over(
        partition_by=cube.dim, order_by=(sa.desc(sa.func.sum(cube.referrals)), cube.value)
    ).label("n")).where(cube.grain == "m", cube.dim.in_(DIMENSIONS))
        .group_by(cube.dim, cube.value).subquery())
    menus: dict[str, list[str]] = {dim: [] for dim in DIMENSIONS}
    with db.read() as c:
        for dim, value in c.execute(sa.select(ranked.c.dim, ranked.c.value)
                                    .where(ranked.c.n <= limit)
                                    .order_by(ranked.c.dim, ranked.c.n)):
            menus[dim].append(value)
    return menus


def _source_menus(db: Database, limit: int, sources: tuple[str, ...]) -> dict[str, list[str]]:
    """The dimension values of the referrals of `sources`, most referrals first."""
    f = analytics_facts.c
    within = facts_clauses(Filters(sources=sources))
    menus: dict[str, list[str]] = {}
    with db.read() as c:
        for dim in DIMENSIONS:
            count = sa.func.count()
            menus[dim] = [str(value) for value, _n in c.execute(
                sa.select(f[dim], count).where(*within).group_by(f[dim])
                .order_by(sa.desc(count), f[dim]).limit(limit))]
    return menus
