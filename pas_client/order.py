"""What the PAS request takes from the order itself: when (the PAS Timing form on the
ServiceRequest, `item.servicedDate` or `item.servicedPeriod` on the Claim) and how much (the
order's quantity as a PAS Quantity: X12 673 units, HSD01).

PAS restricts ServiceRequest.occurrence[x] to Timing (profile-datatype-timing, whose
`repeat.bounds[x]` is a Duration only) and the Claim's serviced dates to full dates, so an order
with `occurrenceDateTime`, `occurrencePeriod` or a Timing bounded by a Period is converted:
the dates go to `event` and `item.serviced[x]`, the length of a period to `boundsDuration`, the
number of visits to `repeat.count`. An order without a quantity whose Timing has a `repeat.count`
asks for that many visits: the Claim item's quantity. A Timing with `countMax` ("2 to 8
visits") asks for the most it allows: the payer authorizes up to the quantity asked for."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from pas_client.conformance.finding import Finding

Resource = dict[str, Any]
UCUM = "http://unitsofmeasure.org"
X12_UNITS = "https://codesystem.x12.org/005010/673"
#: order quantity units (UCUM codes, common spellings) -> (X12 673 code, PAS unit text)
UNITS = {
    **dict.fromkeys(("visit", "visits", "{visit}", "{visits}", "vs"), ("VS", "visits")),
    **dict.fromkeys(("d", "day", "days", "dy"), ("DY", "days")),
    **dict.fromkeys(("h", "hr", "hour", "hours", "hs"), ("HS", "hours")),
    **dict.fromkeys(("mo", "month", "months", "mn"), ("MN", "months")),
    **dict.fromkeys(("1", "{unit}", "{units}", "unit", "units", "{count}", "fl", ""),
                    ("FL", "units")),
}


@dataclass(frozen=True)
class Occurrence:
    timing: Resource | None = None       # ServiceRequest.occurrenceTiming (PAS Timing)
    serviced: Resource | None = None     # {"servicedDate": ...} or {"servicedPeriod": {...}}


def to_quantity(request: Resource, findings: list[Finding]) -> Resource | None:
    """The order's quantity as a PAS Quantity, or None (with a warning) when its unit has no
    X12 673 equivalent or it is not a Quantity."""
    if "quantityRatio" in request or "quantityRange" in request:
        findings.append(Finding("warning", "ServiceRequest.quantity[x]", "input",
                                "the order's quantity is a Ratio or a Range; PAS takes a "
                                "Quantity: left out"))
        return None
    if "quantityQuantity" not in request:
        return _counted(request)
    quantity = request["quantityQuantity"]
    if not isinstance(quantity, dict) or not isinstance(quantity.get("value"), int | float):
        return None
    unit = str(quantity.get("code") or quantity.get("unit") or "").strip().lower()
    mapped = UNITS.get(unit)
    if mapped is None:
        findings.append(Finding("warning", "ServiceRequest.quantityQuantity", "input",
                                f"the order's quantity unit {unit!r} has no X12 673 equivalent "
                                "(visits, days, units, hours, months): quantity left out"))
        return None
    code, text = mapped
    return {"value": quantity["value"], "unit": text, "system": X12_UNITS, "code": code}


def _counted(request: Resource) -> Resource | None:
    """An order without a quantity whose Timing says how many times (`repeat.count`, up to
    `repeat.countMax`): the most visits it allows, the PAS Quantity of the Claim item (X12 673
    VS). Asking for `count` alone would leave the visits up to `countMax` unauthorized."""
    timing = request.get("occurrenceTiming")
    repeat = timing.get("repeat") if isinstance(timing, dict) else None
    counts = [repeat.get(key) for key in ("count", "countMax")] if isinstance(repeat, dict) \
        else []
    usable = [n for n in counts if isinstance(n, int) and not isinstance(n, bool) and n >= 1]
    if not usable:
        return None
    return {"value": max(usable), "unit": "visits", "system": X12_UNITS, "code": "VS"}


def visits(quantity: Resource | None) -> int:
    """How many times the service is requested (Timing count): the visits asked for, else 1."""
    if quantity and quantity.get("code") == "VS" and float(quantity["value"]).is_integer() \
            and quantity["value"] >= 1:
        return int(quantity["value"])
    return 1


def to_occurrence(request: Resource, count: int, findings: list[Finding],
                  today: date | None = None) -> Occurrence:
    """The order's when in the PAS form. A period open at its start (only an end: the
    service is due by then) runs from when the order was signed (`authoredOn`), else from
    `today` (the day the request is built), since a PAS Timing can only say an end as a
    length from a start."""
    opened = str(request.get("authoredOn") or (today or datetime.now(UTC).date()).isoformat())
    if "occurrenceDateTime" in request:
        moment = str(request["occurrenceDateTime"])
        return Occurrence({"event": [moment], "repeat": {"count": count}},
                          _serviced_date(moment, findings))
    if "occurrencePeriod" in request:
        return _from_period(request["occurrencePeriod"], count, findings, opened=opened)
    if "occurrenceTiming" in request:
        return _from_timing(request["occurrenceTiming"], count, findings, opened)
    return Occurrence()


def _from_period(period: Resource, count: int, findings: list[Finding],
                 base: Resource | None = None, *, opened: str = "") -> Occurrence:
    start, end = str(period.get("start", "")), str(period.get("end", ""))
    timing: Resource = copy.deepcopy(base) if base else {}
    repeat = timing.setdefault("repeat", {})
    repeat.pop("boundsPeriod", None)
    if start:
        timing["event"] = [start]
    elif end and not timing.get("event"):
        _open_start(timing, opened, end, findings)
    days = _days_between(start or min((str(e) for e in timing.get("event", [])), default=""),
                         end)
    if days is not None:
        repeat["boundsDuration"] = {"value": days, "unit": "days", "system": UCUM, "code": "d"}
    _ensure_count(repeat, count)
    serviced: Resource = {}
    if _full_date(start):
        serviced["start"] = start[:10]
    if _full_date(end):
        serviced["end"] = end[:10]
    if (start and "start" not in serviced) or (end and "end" not in serviced):
        findings.append(Finding("warning", "ServiceRequest.occurrence[x]", "input",
                                "a date of the order's period is not a full date; the Claim "
                                "item takes full dates only"))
    return Occurrence(timing, {"servicedPeriod": serviced} if serviced else None)


def _open_start(timing: Resource, opened: str, end: str, findings: list[Finding]) -> None:
    """A period with only an end starts when the order was opened, unless it ended before."""
    if _full_date(opened) and _full_date(end) and opened[:10] <= end[:10]:
        timing["event"] = [opened[:10]]
        return
    findings.append(Finding("warning", "ServiceRequest.occurrence[x]", "input",
                            f"the order's period ends {end!r} with no start, and a PAS Timing "
                            f"can only say an end after a start ({opened!r} is later or not "
                            "a full date): the end is on the Claim item only"))


def _from_timing(timing: Resource, count: int, findings: list[Finding],
                 opened: str = "") -> Occurrence:
    repeat = timing.get("repeat") or {}
    if "boundsPeriod" in repeat:
        return _from_period(repeat["boundsPeriod"], count, findings, base=timing,
                            opened=opened)
    kept = copy.deepcopy(timing)
    if "boundsRange" in repeat:
        kept["repeat"].pop("boundsRange")
        findings.append(Finding("warning", "ServiceRequest.occurrenceTiming.repeat.bounds[x]",
                                "input", "a Range bound is not allowed by the PAS Timing "
                                "(Duration only): left out"))
    _ensure_count(kept.setdefault("repeat", {}), count)
    events = [str(e) for e in kept.get("event", [])]
    serviced = _serviced_date(events[0], findings) if len(events) == 1 else None
    if len(events) > 1 and all(_full_date(e) for e in (events[0], events[-1])):
        serviced = {"servicedPeriod": {"start": min(events)[:10], "end": max(events)[:10]}}
    return Occurrence(kept, serviced)


def _ensure_count(repeat: Resource, count: int) -> None:
    """PAS Timing needs a count or a frequency (prof-1), and R4 a count beside a countMax
    (tim-8): an order for "up to countMax times" is sent as at least once (count 1)."""
    if "count" in repeat:
        return
    if "countMax" in repeat:
        repeat["count"] = 1
    elif "frequency" not in repeat:
        repeat["count"] = count


def _serviced_date(moment: str, findings: list[Finding]) -> Resource | None:
    if _full_date(moment):
        return {"servicedDate": moment[:10]}
    findings.append(Finding("warning", "ServiceRequest.occurrence[x]", "input",
                            f"the order's date {moment!r} is not a full date; the Claim item "
                            "takes full dates only: servicedDate left out"))
    return None


def _full_date(text: str) -> bool:
    try:
        date.fromisoformat(text[:10])
    except ValueError:
        return False
    return len(text) >= 10


def _days_between(start: str, end: str) -> int | None:
    if not (_full_date(start) and _full_date(end)):
        return None
    days = (date.fromisoformat(end[:10]) - date.fromisoformat(start[:10])).days + 1
    return days if days >= 1 else None
