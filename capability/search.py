"""Task search parameters: parsing and validation into a store query (no web framework here)."""

from __future__ import annotations

from datetime import UTC, datetime

from referrals.errors import InboundError
from referrals.queries import DateBound, TaskQuery, precision_end

#: name -> (FHIR type, documentation); the CapabilityStatement lists exactly these.
TASK_SEARCH_PARAMS: dict[str, tuple[str, str]] = {
    "_id": ("token", "Logical id of the Task (the referral id)"),
    "status": ("token", "Task.status (requested, accepted, in-progress, completed...)"),
    "business-status": ("token", "BSeR business status code (2.0, 3.0, 5.1.1, 7.0...)"),
    "patient": ("reference", "Task.for, e.g. Patient/123"),
    "owner": ("reference", "Task.owner"),
    "focus": ("reference", "Task.focus, the ServiceRequest"),
    "_lastUpdated": ("date", "meta.lastUpdated with a prefix: eq, ge, gt, le, lt"),
}
CONTROL_PARAMS = {"_count", "_offset", "_format", "_sort"}
MAX_COUNT = 500
DEFAULT_COUNT = 50
PREFIXES = ("eq", "ne", "ge", "gt", "le", "lt")


def parse_task_query(args: list[tuple[str, str]]) -> TaskQuery:
    """Read (name, value) pairs; raise InboundError naming the parameter on bad input."""
    query = TaskQuery()
    for name, value in args:
        base, _, modifier = name.partition(":")
        if base in CONTROL_PARAMS:
            _control(query, base, value)
            continue
        if base not in TASK_SEARCH_PARAMS:
            known = ", ".join(sorted([*TASK_SEARCH_PARAMS, *CONTROL_PARAMS]))
            raise InboundError(f"unknown search parameter {name!r}; supported: {known}",
                               code="not-supported")
        if modifier:
            raise InboundError(f"modifier :{modifier} is not supported on {base}",
                               code="not-supported")
        values = [v.strip() for v in value.split(",") if v.strip()]
        if not values:
            raise InboundError(f"search parameter {name} has an empty value")
        _add(query, base, values)
    return query


def _control(query: TaskQuery, name: str, value: str) -> None:
    if name == "_format":
        return
    if name == "_sort":
        if value not in ("-_lastUpdated", "_lastUpdated"):
            raise InboundError("_sort supports only _lastUpdated and -_lastUpdated",
                               code="not-supported")
        query.newest_first = value.startswith("-")
        return
    try:
        number = int(value)
    except ValueError as exc:
        raise InboundError(f"{name} must be a whole number, not {value!r}") from exc
    if number < 0:
        raise InboundError(f"{name} must not be negative")
    if name == "_count":
        query.count = min(number, MAX_COUNT)
    else:
        query.offset = number


def _add(query: TaskQuery, name: str, values: list[str]) -> None:
    if name == "_id":
        query.ids.extend(values)
    elif name == "status":
        query.statuses.extend(v.rpartition("|")[2] for v in values)
    elif name == "business-status":
        query.business_statuses.extend(v.rpartition("|")[2] for v in values)
    elif name == "patient":
        query.patients.extend(_reference("Patient", v) for v in values)
    elif name == "owner":
        query.owners.extend(values)
    elif name == "focus":
        query.focus.extend(_reference("ServiceRequest", v) for v in values)
    elif name == "_lastUpdated":
        if len(values) != 1:
            raise InboundError("_lastUpdated takes one value per parameter; repeat it for a range")
        query.last_updated.append(parse_date_bound(values[0]))


def _reference(default_type: str, value: str) -> str:
    return value if "/" in value else f"{default_type}/{value}"


def parse_date_bound(value: str) -> DateBound:
    prefix = value[:2] if value[:2] in PREFIXES else "eq"
    text = value[2:] if value[:2] in PREFIXES else value
    if prefix == "ne":
        raise InboundError("_lastUpdated does not support the ne prefix", code="not-supported")
    if len(text) == 4 and text.isdigit():
        text_for_parse = f"{text}-01-01"
    elif len(text) == 7:
        text_for_parse = f"{text}-01"
    else:
        text_for_parse = text
    try:
        moment = datetime.fromisoformat(text_for_parse.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InboundError(f"_lastUpdated value {value!r} is not a FHIR date or instant "
                           "(e.g. ge2026-01-01 or gt2026-01-01T10:00:00Z)") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    start = moment.astimezone(UTC)
    return DateBound(prefix, start, precision_end(start, text))
