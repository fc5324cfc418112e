"""FHIRPath value semantics over JSON: singleton booleans, equality, equivalence and order
(dates and times compared as instants, with partial precision giving an empty result)."""

from __future__ import annotations

import re
from collections.abc import Callable
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


class Unsupported(ValueError):
    """The expression uses what this evaluator cannot do faithfully."""


class EvaluationError(ValueError):
    """The expression failed on this data (e.g. several values where one is needed)."""


class Env:
    """What an evaluation sees besides its focus: %resource, %rootResource, $this."""

    __slots__ = ("context", "member_of", "resource", "root", "this")

    def __init__(self, context: Any, resource: Any, root: Any,
                 member_of: Callable[[Any, str], bool | None] | None = None) -> None:
        self.context, self.resource, self.root, self.this = context, resource, root, context
        self.member_of = member_of


Fn = Callable[[list[Any], Env], list[Any]]


PRIMITIVE_TESTS: dict[str, Callable[[Any], bool]] = {
    "boolean": lambda v: isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "decimal": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


#: names of choice elements (value[x] -> value) in the definitions loaded; a name outside it is
#: never looked up by type suffix (`subscriber` must not find `subscriberId`)
CHOICE_NAMES: set[str] = {"value"}


def register_choice_names(names: set[str]) -> None:
    CHOICE_NAMES.update(names)


def children_named(item: Any, name: str) -> list[Any]:
    if not isinstance(item, dict):
        return []
    value = item.get(name)
    if value is None:
        if name not in CHOICE_NAMES:
            return []
        for key in item:
            if key.startswith(name) and key[len(name):] in TYPE_SUFFIXES:
                value = item[key]
                break
        else:
            return []
    return value if isinstance(value, list) else [value]


def single(values: list[Any], what: str) -> Any:
    if len(values) > 1:
        raise EvaluationError(f"{what} needs one value, found {len(values)}")
    return values[0] if values else None


def distinct(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if not any(equal(value, seen) is True for seen in out):
            out.append(value)
    return out


def type_predicate(type_name: str) -> Callable[[Any], bool]:
    if type_name in PRIMITIVE_TESTS:
        return PRIMITIVE_TESTS[type_name]
    if type_name.lower() in PRIMITIVE_TESTS and type_name[:1].isupper():
        return PRIMITIVE_TESTS[type_name.lower()]
    if type_name[:1].isupper() and type_name not in TYPE_SUFFIXES:
        return lambda v: isinstance(v, dict) and v.get("resourceType") == type_name
    raise Unsupported(f"type test on {type_name} needs type information")


def today_text() -> str:
    return datetime.now(UTC).date().isoformat()
