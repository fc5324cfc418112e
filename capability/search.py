"""Task search parameters: parsing and validation into a store query (no web framework here)."""

from __future__ import annotations

import re
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
#: the _format values that ask for what we answer (FHIR JSON)
JSON_FORMATS = {"json", "application/json", "application/fhir+json", "application/json+fhir"}
MAX_COUNT = 500
DEFAULT_COUNT = 50
#: _count and _offset above this are refused (a _count up to it is served as MAX_COUNT)
MAX_NUMBER = 1_000_000_000
_NUMBER = re.compile(r"[0-9]{1,10}")
#: FHIR date, dateTime and instant: YYYY, YYYY-MM, YYYY-MM-DD, then time to the minute, second
#: or fraction, with Z or an offset (without one, UTC is assumed)
_DATE = re.compile(r"[0-9]{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01])"
                   r"(T([01][0-9]|2[0-3]):[0-5][0-9](:([0-5][0-9]|60)(\.[0-9]{1,9})?)?"
                   r"(Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))?)?)?)?")

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
    controls: set[str] = set()
    for name, value in args:
        if "\x00" in name or "\x00" in value:
            raise InboundError("search parameters must not contain NUL characters",
                               expression=name.replace("\x00", "")[:64])
        base, _, modifier = name.partition(":")
        if base in CONTROL_PARAMS:
            if base in controls:
                raise InboundError(f"{base} is given more than once", expression=base)
            controls.add(base)
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
        # a "+" left unencoded in the URL arrives as a space (application/fhir json)
        wanted = value.split(";")[0].strip().lower().replace(" ", "+")
        if wanted and wanted not in JSON_FORMATS:
            raise InboundError(f"_format {value[:40]!r} is not served; this server answers "
                               "FHIR JSON (_format=json)", code="not-supported", status=406,
                               expression=name)
        return
    if name == "_sort":
        if value not in ("-_lastUpdated", "_lastUpdated"):
            raise InboundError("_sort supports only _lastUpdated and -_lastUpdated",
                               code="not-supported")
        query.newest_first = value.startswith("-")
        return
    if not _NUMBER.fullmatch(value):
        if value.isascii() and value.isdigit():
            raise InboundError(f"{name} must be at most {MAX_NUMBER}", expression=name)
        raise InboundError(f"{name} must be a whole number from 0 to {MAX_NUMBER}, not "
                           f"{value[:40]!r}", expression=name)
    number = int(value)
    if number > MAX_NUMBER:
        raise InboundError(f"{name} must be at most {MAX_NUMBER}", expression=name)
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
    """A `_lastUpdated` value: prefix and the UTC interval its precision covers, which must lie
    within the years 0001-9999 once shifted to UTC."""
    prefix = value[:2] if value[:2] in PREFIXES else "eq"
    text = value[2:] if value[:2] in PREFIXES else value
    if prefix not in SUPPORTED_PREFIXES:
        raise InboundError(f"_lastUpdated does not support the {prefix} prefix; use one of "
                           f"{', '.join(SUPPORTED_PREFIXES)}", code="not-supported",
                           expression="_lastUpdated")
    if not _DATE.fullmatch(text):
        raise InboundError(f"_lastUpdated value {value[:60]!r} is not a FHIR date or instant "
                           "(e.g. ge2026-01-01 or gt2026-01-01T10:00:00Z)",
                           expression="_lastUpdated")
    if len(text) == 4:
        text_for_parse = f"{text}-01-01"
    elif len(text) == 7:
        text_for_parse = f"{text}-01"
    else:
        text_for_parse = re.sub(r"(\.[0-9]{6})[0-9]+", r"\1", text).replace(":60", ":59")
    try:
        moment = datetime.fromisoformat(text_for_parse.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InboundError(f"_lastUpdated value {value[:60]!r} is not a calendar date",
                           expression="_lastUpdated") from exc
    try:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        start = moment.astimezone(UTC)
        end = precision_end(start, text)
    except (ValueError, OverflowError) as exc:  # the interval leaves datetime's 1-9999
        raise _out_of_range(value) from exc
    return DateBound(prefix, start, end)


def _out_of_range(value: str) -> InboundError:
    return InboundError(f"_lastUpdated value {value[:60]!r} is a date outside the years "
                        "0001-9999 (in UTC, including the whole of its precision)",
                        expression="_lastUpdated")
