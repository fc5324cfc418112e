"""A period's report as a FHIR R4 MeasureReport (type summary).

The first group is the loop closure in CMS50's shape (initial population, denominator,
numerator; patient-based; measureScore the proportion); the others are Refloop's referral-based
rates and the medians of the durations (continuous variables, in days). The measure is Refloop's
own (`MEASURE`): the calculation follows CMS50FHIR's populations over Refloop's referrals, but it
is not the certified eCQM (docs/metrics.md says where it differs).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from analytics.metrics import DURATIONS, Spread
from analytics.report import Period, PeriodError, PeriodReport, parse_period

MEASURE = "http://refloop.org/fhir/Measure/referral-outcomes"
MEASURE_VERSION = "1.0.0"
METRIC_SYSTEM = "http://refloop.org/fhir/CodeSystem/referral-metric"
POPULATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-population"
IMPROVEMENT_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-improvement-notation"
UCUM = "http://unitsofmeasure.org"
ID_PREFIX = "refloop-outcomes-"
_ID = re.compile(r"^refloop-outcomes-(\d{4}(?:-\d{2})?)$")


def report_id(period: Period) -> str:
    return ID_PREFIX + period.text


def period_of_id(resource_id: str) -> Period | None:
    """The period a MeasureReport id names, or None when it is not one of ours."""
    match = _ID.match(resource_id)
    if match is None:
        return None
    try:
        return parse_period(match.group(1))
    except PeriodError:
        return None


def build_measure_report(report: PeriodReport) -> dict[str, Any]:
    period = report.period
    totals = report.overall.totals
    closure = report.loop_closure
    groups = [
        _proportion("loop-closure", "Loop closure (CMS50 shape): patients whose first referral's "
                    "report reached the referring provider", closure.initial_population,
                    closure.denominator, 0, closure.numerator, closure.score),
        _proportion("completion", "Completion: visit completed / referrals detected (less "
                    "withdrawn)", totals.referrals, totals.denominator, totals.withdrawn,
                    totals.visited, totals.completion_rate),
        _proportion("scheduling", "Scheduling: referrals with a booked appointment / referrals "
                    "detected (less withdrawn)", totals.referrals, totals.denominator,
                    totals.withdrawn, totals.scheduled, totals.scheduling_rate),
        _proportion("referral-loop-closure", "Referral-based loop closure: report received by "
                    "the referrer / referrals detected (less withdrawn)", totals.referrals,
                    totals.denominator, totals.withdrawn, totals.receipts,
                    totals.loop_closure_rate),
        _proportion("no-show", "No-shows / appointments with a known outcome",
                    totals.no_shows + totals.visited, totals.no_shows + totals.visited, 0,
                    totals.no_shows, totals.no_show_rate),
        *(_proportion(f"{program}-clock-on-time", f"{name}: clocks met by their due time / "
                      "clocks that ended (met or ran out)",
                      getattr(totals, f"{program}_started"),
                      _ended(totals, program), 0, getattr(totals, f"{program}_on_time"),
                      totals.clock_on_time_rate(program))
          for program, name in (("team", "TEAM post-discharge primary care visit"),
                                ("asm", "ASM specialist feedback to primary care"))),
        *(group for name, (label, _start, _end) in DURATIONS.items()
          for group in _durations(name, label, report.overall.spreads.get(
              name, Spread(0, None, None)))),
    ]
    return {
        "resourceType": "MeasureReport",
        "id": report_id(period),
        "status": "complete" if report.complete else "pending",
        "type": "summary",
        "measure": f"{MEASURE}|{MEASURE_VERSION}",
        "date": _instant(report.computed_at),
        "reporter": {"display": "Refloop"},
        "period": {"start": period.start.date().isoformat(),
                   "end": period.last_day.isoformat()},
        "improvementNotation": {"coding": [{"system": IMPROVEMENT_SYSTEM, "code": "increase",
                                            "display": "Increased score indicates "
                                                       "improvement"}]},
        "group": groups,
    }


def _ended(totals: Any, program: str) -> int:
    return sum(getattr(totals, f"{program}_{what}") for what in ("on_time", "late", "missed"))


def _proportion(code: str, text: str, initial: int, denominator: int, excluded: int,
                numerator: int, score: float | None) -> dict[str, Any]:
    populations = [_population("initial-population", initial),
                   _population("denominator", denominator + excluded)]
    if excluded:
        populations.append(_population("denominator-exclusion", excluded))
    populations.append(_population("numerator", numerator))
    group: dict[str, Any] = {"id": code, "code": _metric(code, text), "population": populations}
    if score is not None:
        group["measureScore"] = {"value": round(score, 6)}
    return group


def _durations(name: str, label: str, found: Spread) -> list[dict[str, Any]]:
    """Two continuous-variable groups: the median and the 90th percentile, in days."""
    groups = []
    for statistic, value in (("median", found.median), ("p90", found.p90)):
        code = f"{name.replace('_', '-')}-{statistic}"
        words = "median" if statistic == "median" else "90th percentile"
        group: dict[str, Any] = {
            "id": code, "code": _metric(code, f"{label}, {words}, in days"),
            "population": [_population("initial-population", found.n),
                           _population("measure-population", found.n)]}
        if value is not None:
            group["measureScore"] = {"value": round(value / 24, 3), "unit": "d",
                                     "system": UCUM, "code": "d"}
        groups.append(group)
    return groups


def _metric(code: str, text: str) -> dict[str, Any]:
    return {"coding": [{"system": METRIC_SYSTEM, "code": code}], "text": text}


def _population(code: str, count: int) -> dict[str, Any]:
    return {"id": code, "code": {"coding": [{"system": POPULATION_SYSTEM, "code": code}]},
            "count": count}


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
