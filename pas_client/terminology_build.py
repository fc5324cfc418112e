"""Expand the value sets of required bindings once, when the package data is built.

A compiled value set maps each code system it draws on to its codes, or to None when the codes
cannot be listed here (the code system is not shipped, is licensed, or is selected by a filter
we do not evaluate): the check then still knows which systems are allowed. `notes` says why a
part is open, so the check can report what it did not check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

X12_VALUE_SETS = "https://valueset.x12.org/"
X12_SYSTEM = "https://codesystem.x12.org/005010/"
#: X12 elements whose codes come from an external code source (X12 278 TR3: CL1-01 from NUBC
#: code source 231, CL1-02 from 230, CL1-03 from 239), by the code systems PAS examples use
X12_EXTERNAL = {
    "1315": ("https://www.nubc.org/CodeSystem/PriorityTypeOfAdmitOrVisit",),
    "1314": ("https://www.nubc.org/CodeSystem/PointOfOrigin",),
    "1352": ("https://www.nubc.org/CodeSystem/PatDischargeStatus",),
}
#: value sets that are not published in any package, by the system their URL names
SYSTEM_OF_PREFIX = {"http://loinc.org/vs/": "http://loinc.org"}
FILTERS = ("is-a", "descendent-of")

Lookup = Callable[[str], "tuple[Any, dict[str, Any]] | None"]
Systems = dict[str, "set[str] | None"]


@dataclass
class ValueSetIndex:
    lookup: Lookup

    def resource(self, url: str, kind: str) -> dict[str, Any] | None:
        found = self.lookup(url)
        if found is None or found[1].get("resourceType") != kind:
            return None
        return found[1]


def compile_value_set(url: str, index: ValueSetIndex) -> dict[str, Any]:
    notes: list[str] = []
    systems = expand(url, index, notes, set())
    if systems is None:
        return {"notes": notes or [f"value set {url} is not available here"]}
    return {"systems": {s: (sorted(c) if c is not None else None)
                        for s, c in sorted(systems.items())},
            "notes": sorted(set(notes))}


def expand(url: str, index: ValueSetIndex, notes: list[str], seen: set[str]) -> Systems | None:
    if url in seen:
        return {}
    seen.add(url)
    value_set = index.resource(url, "ValueSet")
    if value_set is None:
        return implied_system(url, notes)
    compose = value_set.get("compose", {})
    if compose.get("include"):
        if compose.get("exclude"):
            notes.append(f"exclusions of {url} are not applied")
        systems: Systems = {}
        for include in compose["include"]:
            part = expand_include(include, index, notes, seen)
            if part is None:
                return None
            merge(systems, part)
        return systems
    contains = value_set.get("expansion", {}).get("contains", [])
    if contains:
        found: Systems = {}
        for item in flatten(contains):
            if "code" in item:
                codes = found.setdefault(item.get("system", ""), set())
                if codes is not None:
                    codes.add(item["code"])
        return found
    notes.append(f"value set {url} has no definition here")
    return None


def implied_system(url: str, notes: list[str]) -> Systems | None:
    if url.startswith(X12_VALUE_SETS):
        systems = x12_systems(url)
        notes.append(f"X12 codes are licensed: only the code system ({', '.join(systems)}) is "
                     "checked")
        return dict.fromkeys(systems)
    for prefix, system in SYSTEM_OF_PREFIX.items():
        if url.startswith(prefix):
            notes.append(f"value set {url} is not published: only the code system ({system}) "
                         "is checked")
            return {system: None}
    notes.append(f"value set {url} is not available here")
    return None


def x12_systems(url: str) -> list[str]:
    """The code systems of an X12 value set, from the X12 element number its URL ends with."""
    element = url.rstrip("/").rsplit("/", 1)[-1]
    return [X12_SYSTEM + element, *X12_EXTERNAL.get(element, ())]


def expand_include(include: dict[str, Any], index: ValueSetIndex, notes: list[str],
                   seen: set[str]) -> Systems | None:
    systems: Systems = {}
    for nested in include.get("valueSet", []):
        part = expand(nested.split("|", 1)[0], index, notes, seen)
        if part is None:
            return None
        merge(systems, part)
    system = include.get("system")
    if not system:
        return systems
    if "concept" in include:
        merge(systems, {system: {c["code"] for c in include["concept"]}})
    elif include.get("filter"):
        merge(systems, {system: filtered(system, include["filter"], index, notes)})
    else:
        merge(systems, {system: all_codes(system, index, notes)})
    return systems


def all_codes(system: str, index: ValueSetIndex, notes: list[str]) -> set[str] | None:
    code_system = index.resource(system, "CodeSystem")
    if code_system is None or code_system.get("content") != "complete":
        notes.append(f"codes of {system} are not shipped: only the code system is checked")
        return None
    return {c["code"] for c in flatten(code_system.get("concept", []), "concept")}


def filtered(system: str, filters: list[dict[str, Any]], index: ValueSetIndex,
             notes: list[str]) -> set[str] | None:
    code_system = index.resource(system, "CodeSystem")
    usable = code_system is not None and code_system.get("content") == "complete" and all(
        f.get("op") in FILTERS and f.get("property") == "concept" for f in filters)
    if not usable or code_system is None:
        notes.append(f"a filter on {system} is not evaluated: only the code system is checked")
        return None
    codes: set[str] | None = None
    for rule in filters:
        below = descendants(code_system.get("concept", []), rule["value"])
        if rule["op"] == "is-a":
            below.add(rule["value"])
        codes = below if codes is None else codes & below
    return codes or set()


def descendants(concepts: list[dict[str, Any]], code: str) -> set[str]:
    for concept in concepts:
        if concept["code"] == code:
            return {c["code"] for c in flatten(concept.get("concept", []), "concept")}
        found = descendants(concept.get("concept", []), code)
        if found:
            return found
    return set()


def flatten(items: list[dict[str, Any]], key: str = "contains") -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for item in items:
        found.append(item)
        found.extend(flatten(item.get(key, []), key))
    return found


def merge(into: Systems, part: Systems) -> None:
    for system, codes in part.items():
        if system not in into:
            into[system] = set(codes) if codes is not None else None
            continue
        current = into[system]
        if current is None or codes is None:
            into[system] = None
        else:
            current |= codes
