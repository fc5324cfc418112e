"""The metric definitions (docs/metrics.md) as pure functions over referral facts.

Everything a rate needs is an additive count (`Totals`), so the same numbers come from a list of
facts, from a sum of rollup rows, or from a sum of both; durations are kept as histograms
(`Histogram`) for the charts, and as exact values where the caller has them (the medians and
90th percentiles of the report are exact; the dashboard's come from the rollup's histogram).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta

from analytics.facts import Facts

#: programs with a clock (referrals/closed_loop.py), as the Totals and Facts fields name them
PROGRAMS = ("team", "asm")
#: funnel steps in order; a referral reached a step when it reached it or any later one
STEPS = ("detected", "accepted", "contacted", "scheduled", "visited", "report received")
#: the durations we measure: name -> (label, start field, end field)
DURATIONS: dict[str, tuple[str, str, str]] = {
    "first_contact": ("Time to first contact", "detected_at", "contacted_at"),
    "scheduling": ("Time to scheduling", "detected_at", "scheduled_at"),
    "visit": ("Time to visit", "detected_at", "visit_at"),
    "authorization": ("Authorization turnaround", "auth_requested_at", "auth_decided_at"),
}
#: histogram bin edges, in hours: by the hour to 2 days, by the day to 60 days, by 5 days to
#: 180 days, then one bin for longer (docs/metrics.md: the rollup's percentile resolution)
EDGES: tuple[float, ...] = (
    *range(0, 48), *range(48, 60 * 24, 24), *range(60 * 24, 180 * 24, 5 * 24), 180 * 24)


@dataclass
class Totals:
    """Additive counts over a set of referrals."""

    referrals: int = 0
    withdrawn: int = 0
    accepted: int = 0
    contacted: int = 0
    scheduled: int = 0
    visited: int = 0
    notes: int = 0
    receipts: int = 0
    no_shows: int = 0
    open: int = 0
    auth_requested: int = 0
    auth_decided: int = 0
    steps_refloop: int = 0
    steps_person: int = 0
    #: program clocks: started, met by their due time, met after it, ran out and never met
    team_started: int = 0
    team_on_time: int = 0
    team_late: int = 0
    team_missed: int = 0
    asm_started: int = 0
    asm_on_time: int = 0
    asm_late: int = 0
    asm_missed: int = 0

    def add(self, other: Totals, sign: int = 1) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + sign * getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # -- the rates (None when the denominator is 0) ------------------------------------------
    @property
    def denominator(self) -> int:
        """Referrals that count: detected, less those the referring provider withdrew."""
        return self.referrals - self.withdrawn

    @property
    def completion_rate(self) -> float | None:
        return _ratio(self.visited, self.denominator)

    @property
    def scheduling_rate(self) -> float | None:
        return _ratio(self.scheduled, self.denominator)

    @property
    def loop_closure_rate(self) -> float | None:
        return _ratio(self.receipts, self.denominator)

    @property
    def no_show_rate(self) -> float | None:
        """No-shows per appointment with a known outcome (no-show or visit)."""
        return _ratio(self.no_shows, self.no_shows + self.visited)

    @property
    def automation_share(self) -> float | None:
        return _ratio(self.steps_refloop, self.steps_refloop + self.steps_person)

    def clock_on_time_rate(self, program: str) -> float | None:
        """Clocks met by their due time, of the clocks that ended (met or ran out)."""
        on_time, late, missed = (getattr(self, f"{program}_{what}")
                                 for what in ("on_time", "late", "missed"))
        return _ratio(on_time, on_time + late + missed)

    def funnel(self) -> list[tuple[str, int]]:
        reached = (self.referrals, self.accepted, self.contacted, self.scheduled, self.visited,
                   self.receipts)
        return list(zip(STEPS, reached, strict=True))


def reached(facts: Facts) -> tuple[bool, ...]:
    """Which funnel steps (STEPS) the referral reached: a later milestone implies the earlier
    ones (a booking made by the clinic counts as contact, a visit as scheduled)."""
    receipt = facts.receipt_at is not None
    visited = facts.visit_at is not None
    scheduled = facts.scheduled_at is not None or visited
    contacted = facts.contacted_at is not None or scheduled
    accepted = facts.accepted_at is not None or contacted
    return True, accepted, contacted, scheduled, visited, receipt


def totals_of(facts: Facts) -> Totals:
    """One referral's contribution. A withdrawn referral counts as detected and withdrawn, and
    for its no-shows and steps; it leaves the denominator and every other numerator."""
    kept = not facts.withdrawn
    _, accepted, contacted, scheduled, visited, receipt = (
        kept and step for step in reached(facts))
    return Totals(
        referrals=1, withdrawn=int(facts.withdrawn), accepted=int(accepted),
        contacted=int(contacted), scheduled=int(scheduled), visited=int(visited),
        notes=int(kept and facts.note_at is not None), receipts=int(receipt),
        no_shows=facts.no_shows, open=int(facts.open),
        auth_requested=int(facts.auth_requested_at is not None),
        auth_decided=int(facts.auth_decided_at is not None),
        steps_refloop=facts.steps_refloop, steps_person=facts.steps_person,
        **clock_counts(facts))


def clock_counts(facts: Facts) -> dict[str, int]:
    """Each program clock's outcome: on time (met by its due time), late (met after it, even
    after it ran out), missed (ran out, not met), or still running (started only)."""
    counts = {}
    for program in PROGRAMS:
        due: datetime | None = getattr(facts, f"{program}_due_at")
        met: datetime | None = getattr(facts, f"{program}_met_at")
        missed: datetime | None = getattr(facts, f"{program}_missed_at")
        counts[f"{program}_started"] = int(due is not None)
        counts[f"{program}_on_time"] = int(due is not None and met is not None and met <= due)
        counts[f"{program}_late"] = int(due is not None and met is not None and met > due)
        counts[f"{program}_missed"] = int(due is not None and met is None and missed is not None)
    return counts


def total(many: Iterable[Facts]) -> Totals:
    summed = Totals()
    for facts in many:
        summed.add(totals_of(facts))
    return summed


def last_step(facts: Facts) -> str:
    """The last funnel step a referral reached (where it fell out, if it ended there)."""
    return [name for name, hit in zip(STEPS, reached(facts), strict=True) if hit][-1]


def drop_key(facts: Facts) -> tuple[str, str, str] | None:
    """(last step reached, how it ended, reason code) for a referral that ended without a
    visit; None for the others."""
    if not facts.dropped or facts.visit_at is not None:
        return None
    return last_step(facts), facts.dropped, facts.drop_reason or "none"


# -- durations -------------------------------------------------------------------------------

def duration_hours(facts: Facts, name: str) -> float | None:
    """`name`'s duration for one referral in hours; None when it did not happen (or the clock
    ran backwards: an end recorded before its start counts as 0)."""
    _label, start_field, end_field = DURATIONS[name]
    start: datetime | None = getattr(facts, start_field)
    end: datetime | None = getattr(facts, end_field)
    if start is None or end is None:
        return None
    return max(0.0, (end - start) / timedelta(hours=1))


def bin_of(hours: float) -> int:
    """The index of the histogram bin holding `hours` (the last bin is open-ended)."""
    low, high = 0, len(EDGES) - 1
    if hours >= EDGES[-1]:
        return high
    while low < high:  # the last edge <= hours
        middle = (low + high + 1) // 2
        if EDGES[middle] <= hours:
            low = middle
        else:
            high = middle - 1
    return low


@dataclass
class Histogram:
    """Counts per bin (EDGES); sparse."""

    counts: dict[int, int] = field(default_factory=dict)

    def add_hours(self, hours: float, n: int = 1) -> None:
        index = bin_of(hours)
        self.counts[index] = self.counts.get(index, 0) + n
        if not self.counts[index]:
            del self.counts[index]

    def merge(self, other: dict[int, int] | Histogram, sign: int = 1) -> None:
        items = other.counts if isinstance(other, Histogram) else other
        for index, n in items.items():
            value = self.counts.get(int(index), 0) + sign * int(n)
            if value:
                self.counts[int(index)] = value
            else:
                self.counts.pop(int(index), None)

    @property
    def n(self) -> int:
        return sum(self.counts.values())

    def percentile(self, p: float) -> float | None:
        """Approximately the `p`th percentile (as `percentile` defines it), interpolating
        linearly inside the bin that holds its rank; the open-ended last bin answers its
        lower edge."""
        total_n = self.n
        if total_n == 0:
            return None
        rank = p / 100 * (total_n - 1)
        seen = 0
        for index in sorted(self.counts):
            count = self.counts[index]
            if rank < seen + count:
                low = EDGES[index]
                if index == len(EDGES) - 1:
                    return float(low)
                width = EDGES[index + 1] - low
                return low + width * (rank - seen + 0.5) / count
            seen += count
        return float(EDGES[max(self.counts)])

    def plain(self) -> dict[str, int]:
        return {str(k): v for k, v in sorted(self.counts.items())}


def percentile(values: Sequence[float], p: float) -> float | None:
    """The `p`th percentile, interpolating linearly between the two nearest ranks (rank
    p/100 * (n - 1) of the sorted values, as numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = p / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Spread:
    """A duration over a set of referrals: how many had it, median and 90th percentile (h)."""

    n: int
    median: float | None
    p90: float | None


def spread(values: Sequence[float]) -> Spread:
    return Spread(len(values), percentile(values, 50), percentile(values, 90))


def spread_of(histogram: Histogram) -> Spread:
    return Spread(histogram.n, histogram.percentile(50), histogram.percentile(90))


def overdue_share(open_referrals: int, overdue: int) -> float | None:
    """Open referrals past their deadline, of all open referrals."""
    return _ratio(overdue, open_referrals)


def is_overdue(facts: Facts, now: datetime) -> bool:
    return facts.open and facts.deadline is not None and facts.deadline < now


# -- cohorts ---------------------------------------------------------------------------------

def cohort(moment: datetime, grain: str) -> str:
    """The cohort of a referral detected at `moment` (UTC): `2026-W45` (ISO week) or `2026-11`."""
    if grain == "week":
        year, week, _ = moment.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{moment.year}-{moment.month:02d}"


def cohort_start(moment: datetime, grain: str) -> str:
    """The first day of `moment`'s cohort, `YYYY-MM-DD` (a Monday for weeks)."""
    day = moment.date()
    if grain == "week":
        return (day - timedelta(days=day.weekday())).isoformat()
    return day.replace(day=1).isoformat()


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator > 0 else None
