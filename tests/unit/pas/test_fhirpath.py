"""The FHIRPath compiler the check evaluates invariants with, and the primitive forms."""

from __future__ import annotations

from typing import Any

import pytest

from pas_client.conformance.fhirpath import compile_expression
from pas_client.conformance.fhirpath_values import Env, Unsupported
from pas_client.conformance.primitives import problem


def run(expression: str, value: Any) -> list[Any]:
    return compile_expression(expression)([value], Env(value, value, value))


@pytest.mark.parametrize(("expression", "value", "expected"), [
    ("start.hasValue().not() or end.hasValue().not() or (start <= end)",
     {"start": "2024-03-01", "end": "2024-02-01"}, [False]),
    ("start.hasValue().not() or end.hasValue().not() or (start <= end)",
     {"start": "2024-01-02T04:30:00+05:00", "end": "2024-01-02T01:00:00Z"}, [True]),
    ("start <= end", {"start": "2024-01", "end": "2024-01-05"}, []),  # precisions differ
    ("extension.exists() != value.exists()", {"url": "x", "valueCode": "a"}, [True]),
    ("extension.exists() != value.exists()", {"url": "x"}, [False]),
    ("subscriber.exists()", {"subscriberId": "1"}, [False]),  # not a choice element
    ("a implies b", {"b": True}, [True]),  # empty implies anything
    ("a and b", {"b": False}, [False]),
    ("a and b", {"b": True}, []),
    ("value.matches('^[0-9]{10}$')", {"value": "1234567893"}, [True]),
    ("code.coding.where(code='x').count() > 0 implies input.exists()",
     {"code": {"coding": [{"code": "x"}]}}, [False]),
    ("entry.first().resource is Claim", {"entry": [{"resource": {"resourceType": "Claim"}}]},
     [True]),
    ("(identifier.count() + name.count()) > 0", {"name": "x"}, [True]),
    ("value.substring(1, 2).toInteger() * 2 mod 5", {"value": "0123"}, [4]),
    ("iif(a = 1, 'one', 'other')", {"a": 2}, ["other"]),
    ("entry.select(fullUrl & resource.id).isDistinct()",
     {"entry": [{"fullUrl": "u", "resource": {"id": "1"}},
                {"fullUrl": "u", "resource": {"id": "1"}}]}, [False]),
])
def test_expressions(expression: str, value: Any, expected: list[Any]) -> None:
    assert run(expression, value) == expected


@pytest.mark.parametrize("expression", ["htmlChecks()", "member.resolve().exists()",
                                        "descendants().as(canonical)"])
def test_what_needs_type_information_is_unsupported(expression: str) -> None:
    with pytest.raises(Unsupported):
        compile_expression(expression)


@pytest.mark.parametrize(("code", "value", "ok"), [
    ("date", "2024-02-29", True), ("date", "2023-02-29", False), ("date", "2024-02-30", False),
    ("date", "2024-13", False), ("date", "2024", True),
    ("dateTime", "2024-01-05T10:00:00+05:00", True), ("dateTime", "2024-01-05T10:00", False),
    ("dateTime", "2024-01-05T24:00:00Z", False), ("dateTime", "2024-04-31", False),
    ("instant", "2024-01-05T10:00:00.123Z", True), ("instant", "2024-01-05T10:00:00", False),
    ("instant", "2024-01-05", False), ("time", "23:59:60", True), ("time", "24:00:00", False),
    ("id", "a.b-C", True), ("id", "a_b", False), ("code", " x", False),
    ("positiveInt", 0, False), ("unsignedInt", 0, True), ("integer", 2**31, False),
    ("boolean", "true", False), ("decimal", True, False), ("string", "", False),
])
def test_primitive_forms(code: str, value: Any, ok: bool) -> None:
    assert (problem(code, value) is None) == ok
