"""The report of one period (a month, `2026-11`, or a year, `2026`): the referrals detected in
it, their figures overall and by each dimension with exact medians and 90th percentiles, and the
loop closure counted the way CMS50 counts it (patient-based, the first referral per patient).
Exported as CSV, plain JSON and a FHIR MeasureReport (analytics/measure_report.py)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa

from analytics.contribution import DIMENSIONS
from analytics.facts import Facts
from analytics.metrics import DURATIONS, Spread, Totals, is_overdue
from analytics.outcomes import Filters, Outcomes, facts_clauses, summarize_points
from analytics.summary import Point, point_of
from analytics.tables import COUNT_COLUMNS, analytics_facts
from referrals.store.database import Database

_PERIOD = re.compile(r"^([0-9]{4})(?:-([0-9]{2}))?$")  # ASCII digits only


class PeriodError(ValueError):
    """A period that is not `YYYY` or `YYYY-MM`."""


@dataclass(frozen=True)
class Period:
    text: str
    start: datetime
    end: datetime  # exclusive

    @property
    def is_year(self) -> bool:
        return len(self.text) == 4

    @property
    def last_day(self) -> date:
        return (self.end - timedelta(days=1)).date()

    @property
    def referral_cutoff(self) -> datetime:
        """Referrals count when detected before this: the period's end, or for a year CMS50's
        October 31 (so that two months are left for the report to come back)."""
        if self.is_year:
            return datetime(self.start.year, 11, 1, tzinfo=UTC)
        return self.end


def parse_period(text: str) -> Period:
    match = _PERIOD.match(text.strip())
    if not match:
        raise PeriodError(f"{text!r} is not a period: use a month (2026-11) or a year (2026)")
    year, month = int(match.group(1)), match.group(2)
    if not 1 <= year <= 9998:
        raise PeriodError(f"{text!r}: the year must be 0001 to 9998")
    if month is None:
        return Period(text.strip(), _at(date(year, 1, 1)), _at(date(year + 1, 1, 1)))
    number = int(month)
    if not 1 <= number <= 12:
        raise PeriodError(f"{text!r}: the month must be 01 to 12")
    start = date(year, number, 1)
    following = date(year + (number == 12), number % 12 + 1, 1)
    return Period(text.strip(), _at(start), _at(following))


@dataclass(frozen=True)
class LoopClosure:
    """CMS50's populations over the period: patients with a referral (their first one), and
    those whose first referral's report reached the referrer within the period."""

    initial_population: int
    denominator: int
    numerator: int

    @property
    def score(self) -> float | None:
        return self.numerator / self.denominator if self.denominator else None


@dataclass
class PeriodReport:
    period: Period
    overall: Outcomes
    loop_closure: LoopClosure
    #: dimension -> [(value, figures of its referrals)]
    by_dimension: dict[str, list[tuple[str, Outcomes]]] = field(default_factory=dict)
    overdue: int = 0
    computed_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def complete(self) -> bool:
        """The period is over (a report of the current period may still change)."""
        return self.computed_at >= self.period.end


def period_report(db: Database, period: Period, *, sources: tuple[str, ...] | None = None,
                  now: datetime | None = None) -> PeriodReport:
    now = now or datetime.now(UTC)
    view = Filters(grain="month", since=period.start.date(), until=period.last_day,
                   sources=sources)
    with db.read() as c:
        rows = c.execute(sa.select(analytics_facts).where(*facts_clauses(view))
                         .order_by(analytics_facts.c.detected_at)).mappings().all()
    facts = [Facts.from_row(row) for row in rows]
    points = [point_of(item, view.grain) for item in facts]
    groups: dict[str, dict[str, list[Point]]] = {dim: {} for dim in DIMENSIONS}
    for item, point in zip(facts, points, strict=True):
        for dim in DIMENSIONS:
            groups[dim].setdefault(getattr(item, dim), []).append(point)
    overall = summarize_points(points, view)
    by_dimension = {
        dim: sorted(((value, summarize_points(members, view))
                     for value, members in found.items()),
                    key=lambda pair: (-pair[1].totals.referrals, pair[0]))
        for dim, found in groups.items()}
    return PeriodReport(period, overall, loop_closure(facts, period),
                        by_dimension, sum(is_overdue(f, now) for f in facts), now)


def loop_closure(facts: Iterable[Facts], period: Period) -> LoopClosure:
    """CMS50 / MIPS 374 over our referrals: each patient's first referral detected in the period
    (for a year, by October 31), not withdrawn (CMS50 counts active or completed orders only);
    the numerator when the referring provider received its report after the referral was
    detected and before the period ended."""
    first: dict[str, Facts] = {}
    for item in facts:
        if item.withdrawn or not period.start <= item.detected_at < period.referral_cutoff:
            continue
        known = first.get(item.patient)
        if known is None or (item.detected_at, item.referral_id) < (known.detected_at,
                                                                    known.referral_id):
            first[item.patient] = item
    closed = sum(1 for f in first.values() if f.receipt_at is not None
                 and f.detected_at <= f.receipt_at < period.end)
    return LoopClosure(len(first), len(first), closed)


# -- CSV ---------------------------------------------------------------------------------------

RATES = ("completion_rate", "scheduling_rate", "loop_closure_rate", "no_show_rate",
         "automation_share")
COUNTS = COUNT_COLUMNS


def csv_header(first: Iterable[str]) -> list[str]:
    spreads = [f"{name}_{what}_hours" for name in DURATIONS for what in ("n", "median", "p90")]
    return [*first, *COUNTS, *RATES, *spreads]


def csv_values(totals: Totals, spreads: dict[str, Spread]) -> list[str]:
    values = [str(getattr(totals, name)) for name in COUNTS]
    values += [_number(getattr(totals, name), 4) for name in RATES]
    for name in DURATIONS:
        found = spreads.get(name, Spread(0, None, None))
        values += [str(found.n), _number(found.median, 2), _number(found.p90, 2)]
    return values


def report_csv(report: PeriodReport) -> str:
    """One row for the period, then one per value of each dimension."""
    return _csv([csv_header(["period", "dimension", "value"]), *report_rows(report)])


def report_rows(report: PeriodReport) -> Iterator[list[str]]:
    period = report.period.text
    yield [period, "all", "", *csv_values(report.overall.totals, report.overall.spreads)]
    for dim, rows in report.by_dimension.items():
        for value, figures in rows:
            yield [period, dim, value, *csv_values(figures.totals, figures.spreads)]


def outcomes_csv(figures: Outcomes) -> str:
    """The dashboard's view: one row per cohort, then the breakdown (counts only)."""
    grain = figures.filters.grain
    rows = [csv_header([grain, "dimension", "value"])]
    where = "; ".join(f"{dim}={value}" for dim, value in figures.filters.where)
    for cohort in figures.cohorts:
        rows.append([cohort.label, "all" if not where else "filter", where,
                     *csv_values(cohort.totals, cohort.spreads)])
    for value, totals in figures.breakdown:
        rows.append(["(range)", figures.filters.breakdown, value, *csv_values(totals, {})])
    return _csv(rows)


def _csv(rows: Iterable[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        writer.writerow([_safe_cell(cell) for cell in row])
    return out.getvalue()


def _safe_cell(cell: str) -> str:
    """No spreadsheet formulas from data (a referrer's display name starting with '=')."""
    return "'" + cell if cell[:1] in ("=", "+", "-", "@") and not _is_number(cell) else cell


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _number(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _at(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def plain(report: PeriodReport) -> dict[str, Any]:
    """The report as JSON-ready data (`refloop report --json`)."""
    def figures(found: Outcomes) -> dict[str, Any]:
        totals = found.totals
        return {**totals.as_dict(), "denominator": totals.denominator,
                **{name: getattr(totals, name) for name in RATES},
                "durations_hours": {name: {"n": s.n, "median": s.median, "p90": s.p90}
                                    for name, s in found.spreads.items()},
                "dropoff": [{"after": step, "outcome": outcome, "reason": reason, "n": n}
                            for step, outcome, reason, n in found.dropoff]}

    closure = report.loop_closure
    return {
        "period": report.period.text, "start": report.period.start.isoformat(),
        "end": report.period.end.isoformat(), "complete": report.complete,
        "computed_at": report.computed_at.isoformat(),
        "overall": {**figures(report.overall), "overdue": report.overdue},
        "loop_closure_cms50": {"initial_population": closure.initial_population,
                               "denominator": closure.denominator,
                               "numerator": closure.numerator, "score": closure.score},
        "by": {dim: [{"value": value, **figures(found)} for value, found in rows]
               for dim, rows in report.by_dimension.items()},
    }
