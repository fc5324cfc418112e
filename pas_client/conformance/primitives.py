"""FHIR JSON primitives: the JSON type each one needs and its lexical form, dates checked
against the calendar (2024-02-30 is no date), instants with their time zone."""

from __future__ import annotations

import re
from datetime import date, time
from typing import Any

FHIRPATH = "http://hl7.org/fhirpath/System."
DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
DATE_TIME = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2}):(\d{2})(\.\d+)?"
                       r"(Z|[+-]\d{2}:\d{2}))?)?)?$")
INSTANT = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?"
                     r"(Z|[+-]\d{2}:\d{2})$")
TIME = re.compile(r"^(\d{2}):(\d{2}):(\d{2})(\.\d+)?$")
FORMATS = {
    "code": re.compile(r"^[^\s]+( [^\s]+)*$"),
    "id": re.compile(r"^[A-Za-z0-9\-.]{1,64}$"),
    "oid": re.compile(r"^urn:oid:[0-2](\.(0|[1-9]\d*))+$"),
    "uuid": re.compile(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
    "uri": re.compile(r"^\S*$"),
    "url": re.compile(r"^\S*$"),
    "canonical": re.compile(r"^\S*$"),
    "base64Binary": re.compile(r"^(\s*([0-9a-zA-Z+/=]){4}\s*)+$"),
}
STRINGS = {"string", "code", "id", "uri", "url", "canonical", "oid", "uuid", "markdown",
           "base64Binary", "date", "dateTime", "instant", "time", "xhtml"}
INTEGERS = {"integer": (-2**31, 2**31 - 1), "positiveInt": (1, 2**31 - 1),
            "unsignedInt": (0, 2**31 - 1), "integer64": (-2**63, 2**63 - 1)}
PRIMITIVES = STRINGS | set(INTEGERS) | {"boolean", "decimal"}
SYSTEM_TYPES = {"String": "string", "Boolean": "boolean", "Integer": "integer",
                "Decimal": "decimal", "Date": "date", "DateTime": "dateTime", "Time": "time"}


def fhir_type(code: str) -> str:
    """A type code, with FHIRPath system types (Element.id, Extension.url) as FHIR ones."""
    if code.startswith(FHIRPATH):
        return SYSTEM_TYPES.get(code[len(FHIRPATH):], "string")
    return code


def is_primitive(code: str) -> bool:
    return code in PRIMITIVES


def problem(code: str, value: Any) -> str | None:
    """What is wrong with `value` as a `code` primitive, or None."""
    if code in STRINGS:
        if not isinstance(value, str):
            return f"expected a {code} (JSON string), found {json_kind(value)}"
        if not value.strip() and code != "xhtml":
            return f"empty {code}; leave the element out instead"
        return lexical_problem(code, value)
    if code == "boolean":
        return None if isinstance(value, bool) else f"expected a boolean, found {json_kind(value)}"
    if code in INTEGERS:
        if not isinstance(value, int) or isinstance(value, bool):
            return f"expected a {code} (JSON number), found {json_kind(value)}"
        low, high = INTEGERS[code]
        return None if low <= value <= high else f"{value} is not a valid {code}"
    if code == "decimal":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else f"expected a decimal (JSON number), found {json_kind(value)}"
    return None


def lexical_problem(code: str, value: str) -> str | None:
    if code == "date":
        return calendar_problem(DATE.match(value), value, code)
    if code == "dateTime":
        return calendar_problem(DATE_TIME.match(value), value, code)
    if code == "instant":
        return calendar_problem(INSTANT.match(value), value, code)
    if code == "time":
        match = TIME.match(value)
        if match is None or not valid_time(match.group(1), match.group(2), match.group(3)):
            return f"{value!r} is not a valid time (hh:mm:ss)"
        return None
    pattern = FORMATS.get(code)
    if pattern is not None and not pattern.match(value):
        return f"{value!r} is not a valid {code}"
    return None


def calendar_problem(match: re.Match[str] | None, value: str, code: str) -> str | None:
    forms = {"date": "YYYY, YYYY-MM or YYYY-MM-DD",
             "dateTime": "YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss with a time zone",
             "instant": "YYYY-MM-DDThh:mm:ss(.sss) with a time zone"}
    if match is None:
        return f"{value!r} is not a valid {code} ({forms[code]})"
    year, month, day = match.group(1), match.group(2), match.group(3)
    try:
        date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        return f"{value!r} is not a real calendar date"
    groups = match.groups()
    if len(groups) > 3 and groups[3] is not None:
        if not valid_time(groups[3], groups[4], groups[5]):
            return f"{value!r} has no valid time of day"
        zone = groups[7]
        if zone != "Z" and (int(zone[1:3]) > 14 or int(zone[4:6]) > 59):
            return f"{value!r} has no valid time zone"
    return None


def valid_time(hours: str, minutes: str, seconds: str) -> bool:
    try:
        time(int(hours), int(minutes), min(int(seconds), 59))
    except ValueError:
        return False
    return int(seconds) <= 60


def json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def contains(value: Any, pattern: Any) -> bool:
    """FHIR pattern semantics: every part of `pattern` is present in `value`."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            k in value and contains(value[k], v) for k, v in pattern.items())
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else [value]
        return all(any(contains(item, p) for item in items) for p in pattern)
    return bool(value == pattern)
