"""FHIRPath value semantics over JSON: singleton booleans, equality, equivalence and order
(dates and times compared as instants, with partial precision giving an empty result)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

#: the type suffixes of choice elements (value[x] -> valueCodeableConcept)
TYPE_SUFFIXES = frozenset([
    "Base64Binary", "Boolean", "Canonical", "Code", "Date", "DateTime", "Decimal", "Id",
    "Instant", "Integer", "Markdown", "Oid", "PositiveInt", "String", "Time", "UnsignedInt",
    "Uri", "Url", "Uuid", "Address", "Age", "Annotation", "Attachment", "CodeableConcept",
    "Coding", "ContactPoint", "Count", "Distance", "Duration", "HumanName", "Identifier", "Money",
    "Period", "Quantity", "Range", "Ratio", "Reference", "SampledData", "Signature", "Timing",
    "ContactDetail", "Contributor", "DataRequirement", "Expression", "ParameterDefinition",
    "RelatedArtifact", "TriggerDefinition", "UsageContext", "Dosage", "Meta"])

DATE_LIKE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?"
                       r"(Z|[+-]\d{2}:\d{2})?)?)?)?$")
TIME_LIKE = re.compile(r"^(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?$")


def to_bool(values: list[Any]) -> bool | None:
    """A collection as a boolean: empty is None, a single non-boolean is True."""
    if not values:
        return None
    if len(values) > 1:
        from pas_client.conformance.fhirpath import EvaluationError
        raise EvaluationError(f"a boolean is needed, found {len(values)} values")
    value = values[0]
    return value if isinstance(value, bool) else True


def moment(text: str) -> tuple[int, datetime] | None:
    """(precision, instant) of a date or dateTime string; precision counts the parts given."""
    match = DATE_LIKE.match(text)
    if match is None:
        return None
    parts = [p for p in match.groups()[:6] if p is not None]
    numbers = [int(p) for p in parts] + [1, 1, 0, 0, 0][len(parts) - 1:]
    try:
        year, month, day, hour, minute, second = numbers[:6]
        value = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=UTC)
    except ValueError:
        return None
    if match.group(7):
        value = value.replace(microsecond=int(float(match.group(7)) * 1_000_000))
    zone = match.group(8)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        value -= sign * timedelta(hours=hours, minutes=minutes)
    return len(parts), value


def compare(a: Any, b: Any) -> int | None:
    """-1, 0 or 1; None when the two cannot be ordered (different kinds or precisions)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return (a > b) - (a < b)
    if isinstance(a, str) and isinstance(b, str):
        ma, mb = moment(a), moment(b)
        if ma is not None and mb is not None:
            if ma[0] != mb[0]:
                return None
            return (ma[1] > mb[1]) - (ma[1] < mb[1])
        return (a > b) - (a < b)
    return None


def equal(a: Any, b: Any) -> bool | None:
    if isinstance(a, str) and isinstance(b, str):
        if a == b:
            return True
        ma, mb = moment(a), moment(b)
        if ma is not None and mb is not None:
            return None if ma[0] != mb[0] else ma[1] == mb[1]
        return False
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return bool(a == b)


def equivalent(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return " ".join(a.lower().split()) == " ".join(b.lower().split())
    return bool(equal(a, b))
