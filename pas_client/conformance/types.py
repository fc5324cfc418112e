"""FHIR JSON shapes: which keys hold an element, primitive formats, pattern matching, codes."""

from __future__ import annotations

import re
from typing import Any

from pas_client.conformance.profiles import Element

FHIRPATH_STRING = "http://hl7.org/fhirpath/System.String"
FORMATS = {
    "date": re.compile(r"^\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?)?$"),
    "dateTime": re.compile(r"^\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01])(T([01]\d|2[0-3]):"
                           r"[0-5]\d:([0-5]\d|60)(\.\d+)?(Z|[+-]((0\d|1[0-3]):[0-5]\d|14:00)))?)"
                           r"?)?$"),
    "instant": re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:"
                          r"([0-5]\d|60)(\.\d+)?(Z|[+-]((0\d|1[0-3]):[0-5]\d|14:00))$"),
    "time": re.compile(r"^([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?$"),
    "code": re.compile(r"^[^\s]+(\s[^\s]+)*$"),
    "id": re.compile(r"^[A-Za-z0-9\-.]{1,64}$"),
}
STRINGS = {"string", "code", "id", "uri", "url", "canonical", "oid", "uuid", "markdown",
           "base64Binary", "date", "dateTime", "instant", "time", "xhtml", FHIRPATH_STRING}
INTEGERS = {"integer", "positiveInt", "unsignedInt", "integer64"}


def single_code(ed: Element) -> str | None:
    codes = {t["code"] for t in ed.get("type", [])}
    return codes.pop() if len(codes) == 1 else None


def is_array(ed: Element) -> bool:
    return ed.get("max", "1") not in ("0", "1") or ed.get("base_max", "1") == "*"


def values_for(node: dict[str, Any], name: str) -> list[tuple[str, Any]]:
    """(key, value) pairs of the instance for element `name` (choice types expanded)."""
    if name.endswith("[x]"):
        stem = name[:-3]
        keys = [k for k in node if k.startswith(stem) and len(k) > len(stem)
                and k[len(stem)].isupper()]
    else:
        keys = [name] if name in node else []
    found: list[tuple[str, Any]] = []
    for key in keys:
        value = node[key]
        items = value if isinstance(value, list) else [value]
        found.extend((key, item) for item in items)
    return found


def choice_code(ed: Element, key: str) -> str | None:
    """The type a choice key names (valueBoolean -> boolean), checked by shape_problem."""
    name = ed["id"].rsplit(".", 1)[-1].split(":", 1)[0]
    if not name.endswith("[x]"):
        return None
    suffix = key[len(name) - 3:]
    for type_ in ed.get("type", []):
        if type_["code"].lower() == suffix.lower():
            return str(type_["code"])
    return f"!{suffix}"


def shape_problem(code: str, value: Any) -> str | None:
    if code.startswith("!"):
        return f"type {code[1:]} is not allowed here"
    if code in STRINGS:
        if not isinstance(value, str):
            return f"expected a {code} (JSON string)"
        pattern = FORMATS.get(code)
        if pattern is not None and not pattern.match(value):
            return f"{value!r} is not a valid {code}"
        return None if value or code == FHIRPATH_STRING else f"empty {code}"
    if code == "boolean":
        return None if isinstance(value, bool) else "expected a boolean"
    if code in INTEGERS:
        if not isinstance(value, int) or isinstance(value, bool):
            return f"expected a {code} (JSON number)"
        if (code == "positiveInt" and value < 1) or (code == "unsignedInt" and value < 0):
            return f"{value} is not a valid {code}"
        return None
    if code == "decimal":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else "expected a decimal (JSON number)"
    if code[:1].isupper() or code.startswith("http"):
        return None if isinstance(value, dict) else f"expected a {code} (JSON object)"
    return None


def contains(value: Any, pattern: Any) -> bool:
    """FHIR pattern semantics: every part of `pattern` is present in `value`."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            k in value and contains(value[k], v) for k, v in pattern.items())
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else [value]
        return all(any(contains(item, p) for item in items) for p in pattern)
    return bool(value == pattern)


def in_value_set(value: Any, code: str | None, allowed: frozenset[tuple[str, str]]) -> bool:
    if isinstance(value, str):
        return any(c == value for _, c in allowed)
    if not isinstance(value, dict):
        return True
    codings = value.get("coding", []) if code == "CodeableConcept" or "coding" in value \
        else [value]
    if not codings:
        return "text" in value
    return any((c.get("system", ""), c.get("code")) in allowed for c in codings)
