"""What one referral adds to the rollup cube: its counts and durations under each cohort grain
and each dimension value, and where it fell out. A referral whose facts change is taken out with
its old contribution (sign -1) and put back with the new one, so the cube stays the sum of the
facts it was built from."""

from __future__ import annotations

from dataclasses import dataclass, field

from analytics.facts import Facts
from analytics.metrics import (
    DURATIONS,
    Histogram,
    Totals,
    cohort_start,
    drop_key,
    duration_hours,
    totals_of,
)

#: the dimensions a cohort is broken down by ("all": the whole cohort)
DIMENSIONS = ("specialty", "referrer", "destination", "payer", "priority")
#: cube grain code -> cohort grain
GRAINS = {"w": "week", "m": "month"}

CubeKey = tuple[str, str, str, str]  # grain, dim, value, period
DropKey = tuple[str, str, str, str, str, str, str]  # + step, outcome, reason


@dataclass
class CubeCell:
    totals: Totals = field(default_factory=Totals)
    histograms: dict[str, Histogram] = field(default_factory=dict)

    def add(self, other: CubeCell, sign: int = 1) -> None:
        self.totals.add(other.totals, sign)
        for name, histogram in other.histograms.items():
            self.histograms.setdefault(name, Histogram()).merge(histogram, sign)


@dataclass
class Contribution:
    """Cube and drop-off deltas, summed over any number of referrals."""

    cube: dict[CubeKey, CubeCell] = field(default_factory=dict)
    dropoff: dict[DropKey, int] = field(default_factory=dict)

    def add(self, facts: Facts, sign: int = 1) -> None:
        cell = cell_of(facts)
        dropped = drop_key(facts)
        for key in cube_keys(facts):
            self.cube.setdefault(key, CubeCell()).add(cell, sign)
            if dropped is not None:
                drop = (*key, *dropped)
                self.dropoff[drop] = self.dropoff.get(drop, 0) + sign

    def is_empty(self) -> bool:
        return not self.cube and not self.dropoff


def cell_of(facts: Facts) -> CubeCell:
    histograms: dict[str, Histogram] = {}
    for name in DURATIONS:
        hours = duration_hours(facts, name)
        if hours is not None:
            histograms.setdefault(name, Histogram()).add_hours(hours)
    return CubeCell(totals_of(facts), histograms)


def cube_keys(facts: Facts) -> list[CubeKey]:
    keys = []
    for grain, name in GRAINS.items():
        period = cohort_start(facts.detected_at, name)
        keys.append((grain, "all", "", period))
        keys.extend((grain, dim, getattr(facts, dim), period) for dim in DIMENSIONS)
    return keys
