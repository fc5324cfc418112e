"""Task search parameters: parsing and validation into a store query (no web framework here)."""

from __future__ import annotations

from datetime import UTC, datetime

from referrals.errors import InboundError
from referrals.model import Stage
from referrals.queries import DateBound, TaskQuery, precision_end
from referrals.task import BSER_SYSTEM, STAGE_MAP, STAGE_SYSTEM

#: name -> (FHIR type, documentation); the CapabilityStatement lists exactly these.
TASK_SEARCH_PARAMS: dict[str, tuple[str, str]] = {
    "_id": ("token", "Logical id of the Task (the referral id)"),
    "status": ("token", "Task.status (requested, accepted, in-progress, completed...)"),
    "business-status": ("token", "BSeR business status code (2.0, 3.0, 5.1.1, 7.0...) or a "
                        "Refloop stage code (triage, auth-pending, on-hold...)"),
    "patient": ("reference", "Task.for, e.g. Patient/123"),
    "owner": ("reference", "Task.owner"),
    "focus": ("reference", "Task.focus, the ServiceRequest"),
    "_lastUpdated": ("date", "meta.lastUpdated with a prefix: eq, ge, gt, le, lt"),
}
CONTROL_PARAMS = {"_count", "_offset", "_format", "_sort"}
MAX_COUNT = 500
DEFAULT_COUNT = 50
PREFIXES = ("eq", "ne", "ge", "gt", "le", "lt", "sa", "eb", "ap")
SUPPORTED_PREFIXES = ("eq", "ge", "gt", "le", "lt")
#: FHIR R4 Task.status codes (http://hl7.org/fhir/task-status).
TASK_STATUSES = ("draft", "requested", "received", "accepted", "rejected", "ready", "cancelled",
                 "in-progress", "on-hold", "failed", "completed", "entered-in-error")
BSER_CODES = tuple(sorted({bser[0] for _status, bser in STAGE_MAP.values() if bser}))
STAGE_CODES = tuple(stage.value for stage in Stage)


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
        for value in values:
            system, code = _token(value)
            if code not in TASK_STATUSES or system not in (None, "",
                                                           "http://hl7.org/fhir/task-status"):
                raise InboundError(f"status {value!r} is not a Task.status code; use one of "
                                   f"{', '.join(TASK_STATUSES)}")
            query.statuses.append(code)
    elif name == "business-status":
        for value in values:
            _add_business_status(query, value)
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


def _token(value: str) -> tuple[str | None, str]:
    system, bar, code = value.rpartition("|")
    return (system if bar else None), code


def _add_business_status(query: TaskQuery, value: str) -> None:
    """A BSeR code (2.0, 5.1.1...) or one of our stage codes (on-hold, auth-pending...)."""
    system, code = _token(value)
    if code in BSER_CODES and system in (None, "", BSER_SYSTEM):
        query.business_statuses.append(code)
    elif code in STAGE_CODES and system in (None, "", STAGE_SYSTEM):
        query.stages.append(code)
    else:
        raise InboundError(f"business-status {value!r} is not known; use a BSeR code "
                           f"({', '.join(BSER_CODES)}) or a stage ({', '.join(STAGE_CODES)})")


def _reference(default_type: str, value: str) -> str:
    return value if "/" in value else f"{default_type}/{value}"


def parse_date_bound(value: str) -> DateBound:
    prefix = value[:2] if value[:2] in PREFIXES else "eq"
    text = value[2:] if value[:2] in PREFIXES else value
    if prefix not in SUPPORTED_PREFIXES:
        raise InboundError(f"_lastUpdated does not support the {prefix} prefix; use one of "
                           f"{', '.join(SUPPORTED_PREFIXES)}", code="not-supported")
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
