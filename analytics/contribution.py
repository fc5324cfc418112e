"""What one referral adds to the rollup cube: its counts and durations under each cohort grain
and each dimension value, and where it fell out. A referral whose facts change is taken out with
its old contribution (sign -1) and put back with the new one, so the cube stays the sum of the
facts it was built from.

Counts travel as plain lists in `COUNT_FIELDS` order (a rebuild adds millions of them)."""

from __future__ import annotations

import functools
import json
import operator
from dataclasses import dataclass, field, fields
from datetime import datetime

from analytics.facts import Facts
from analytics.metrics import (
    DURATIONS,
    Histogram,
    Totals,
    bin_of,
    cohort_start,
    drop_key,
    duration_hours,
    totals_of,
)
from analytics.tables import COUNT_COLUMNS

#: the dimensions a cohort is broken down by ("all": the whole cohort)
DIMENSIONS = ("specialty", "referrer", "destination", "payer", "priority")
#: pairs of dimensions the cube also holds, by month only (a view with two filters, or one
#: filter broken down by another dimension); the dim of such a cell is `pair_dim(a, b)`
PAIRS = tuple((a, b) for i, a in enumerate(DIMENSIONS) for b in DIMENSIONS[i + 1:])
PAIR_GRAIN = "m"
#: cube grain code -> cohort grain
GRAINS = {"w": "week", "m": "month"}
COUNT_FIELDS = tuple(f.name for f in fields(Totals))
if COUNT_FIELDS != COUNT_COLUMNS:  # rows are written positionally
    raise ImportError("analytics.tables.COUNT_COLUMNS must list the Totals fields in order")

#: a cube cell's open referrals by the day of their deadline (in `histograms`, by day_number):
#: time alone makes a referral overdue, so the dashboard counts the days before today from the
#: cube and only today's deadlines from the facts
DEADLINES = "deadlines"

CubeKey = tuple[str, str, str, str]  # grain, dim, value, period
DropKey = tuple[str, str, str, str, str, str, str]  # + step, outcome, reason


@dataclass
class CubeCell:
    counts: list[int] = field(default_factory=lambda: [0] * len(COUNT_FIELDS))
    #: duration name -> {bin index: count}
    histograms: dict[str, dict[int, int]] = field(default_factory=dict)

    def add(self, counts: list[int], histograms: dict[str, dict[int, int]],
            sign: int = 1) -> None:
        self.counts = list(map(operator.add if sign > 0 else operator.sub, self.counts, counts))
        for name, bins in histograms.items():
            target = self.histograms.setdefault(name, {})
            for index, n in bins.items():
                value = target.get(index, 0) + sign * n
                if value:
                    target[index] = value
                else:
                    target.pop(index, None)

    @property
    def totals(self) -> Totals:
        return Totals(*self.counts)

    def histogram(self, name: str) -> Histogram:
        return Histogram(dict(self.histograms.get(name, {})))


@dataclass
class Contribution:
    """Cube and drop-off deltas, summed over any number of referrals."""

    cube: dict[CubeKey, CubeCell] = field(default_factory=dict)
    dropoff: dict[DropKey, int] = field(default_factory=dict)

    def add(self, facts: Facts, sign: int = 1) -> None:
        counts, histograms = parts_of(facts)
        dropped = drop_key(facts)
        cube = self.cube
        for key in cube_keys(facts):
            cell = cube.get(key)
            if cell is None:
                cell = cube[key] = CubeCell()
            cell.add(counts, histograms, sign)
            if dropped is not None:
                drop = (*key, *dropped)
                self.dropoff[drop] = self.dropoff.get(drop, 0) + sign

    def is_empty(self) -> bool:
        return not self.cube and not self.dropoff


def parts_of(facts: Facts) -> tuple[list[int], dict[str, dict[int, int]]]:
    """One referral's counts (COUNT_FIELDS order), its durations' histogram bins, and for an
    open referral with a deadline the day of its deadline (`DEADLINES`)."""
    totals = totals_of(facts)
    histograms: dict[str, dict[int, int]] = {}
    for name in DURATIONS:
        hours = duration_hours(facts, name)
        if hours is not None:
            histograms[name] = {bin_of(hours): 1}
    if facts.open and facts.deadline is not None:
        histograms[DEADLINES] = {day_number(facts.deadline): 1}
    return [getattr(totals, name) for name in COUNT_FIELDS], histograms


def day_number(moment: datetime) -> int:
    """Days since 1970-01-01 of `moment`'s UTC day."""
    return int(moment.timestamp() // 86400)


def cube_keys(facts: Facts) -> list[CubeKey]:
    keys = []
    for grain, name in GRAINS.items():
        period = cohort_start(facts.detected_at, name)
        keys.append((grain, "all", "", period))
        keys.extend((grain, dim, getattr(facts, dim), period) for dim in DIMENSIONS)
        if grain == PAIR_GRAIN:
            keys.extend((grain, pair_dim(a, b), pair_value(getattr(facts, a), getattr(facts, b)),
                         period) for a, b in PAIRS)
    return keys


def pair_dim(a: str, b: str) -> str:
    """The cube's `dim` of the pair of dimensions `a` and `b` (in DIMENSIONS order)."""
    return f"{a}+{b}"


@functools.lru_cache(maxsize=1 << 16)
def pair_value(a: str, b: str) -> str:
    """The cube's `value` of a pair cell: both values, JSON-encoded, so that a value's own
    characters can never be taken for the separator."""
    return json.dumps([a, b], ensure_ascii=False, separators=(",", ":"))


def pair_prefix(a: str) -> str:
    """What every pair value whose first value is `a` starts with."""
    return json.dumps([a], ensure_ascii=False)[:-1] + ","


def pair_suffix(b: str) -> str:
    """What every pair value whose second value is `b` ends with."""
    return "," + json.dumps([b], ensure_ascii=False)[1:]


Filter = tuple[str, str]  # dimension, value


def ordered_pair(where: tuple[Filter, ...]) -> tuple[Filter, Filter] | None:
    """Two filters on two different dimensions, in DIMENSIONS order (None otherwise)."""
    if len(where) != 2 or where[0][0] == where[1][0]:
        return None
    first, second = sorted(where, key=lambda item: DIMENSIONS.index(item[0]))
    return first, second
