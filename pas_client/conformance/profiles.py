"""StructureDefinition snapshots indexed for walking: children and slices of each element,
and the value sets of the package expanded where they list their codes."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pas_client.profile_data import load_package_data

Element = dict[str, Any]


def strip_version(url: str) -> str:
    return url.split("|", 1)[0]


def last_segment(element_id: str) -> str:
    return element_id.rsplit(".", 1)[-1]


@dataclass
class Profile:
    url: str
    type: str
    root: Element
    by_id: dict[str, Element]
    children: dict[str, list[Element]] = field(default_factory=dict)
    slices: dict[str, list[Element]] = field(default_factory=dict)

    def children_of(self, element: Element) -> list[Element]:
        found = self.children.get(element["id"])
        if found is None and "contentReference" in element:
            target = element["contentReference"].split("#", 1)[-1]
            found = self.children.get(target)
        return found or []


def build_profile(structure: dict[str, Any]) -> Profile:
    elements = structure["elements"]
    by_id = {e["id"]: e for e in elements}
    profile = Profile(structure["url"], structure["type"], elements[0], by_id)
    for element in elements[1:]:
        eid = element["id"]
        parent, _, name = eid.rpartition(".")
        if ":" in name:
            base = f"{parent}.{name.split(':', 1)[0]}"
            profile.slices.setdefault(base, []).append(element)
        else:
            profile.children.setdefault(parent, []).append(element)
    return profile


@dataclass
class ProfileSet:
    version: str
    profiles: dict[str, Profile]
    value_sets: dict[str, frozenset[tuple[str, str]] | None]

    def try_get(self, url: str) -> Profile | None:
        return self.profiles.get(strip_version(url))

    def codes(self, value_set: str) -> frozenset[tuple[str, str]] | None:
        """(system, code) pairs of a package value set; None when it cannot be expanded here."""
        return self.value_sets.get(strip_version(value_set))


@cache
def profile_set(version: str) -> ProfileSet:
    data = load_package_data(version)
    profiles = {strip_version(s["url"]): build_profile(s) for s in data["structures"]
                if s["elements"]}
    systems = {c["url"]: c["codes"] for c in data["codeSystems"] if c.get("content") == "complete"}
    value_sets = {strip_version(v["url"]): _expand(v, systems) for v in data["valueSets"]}
    return ProfileSet(version, profiles, value_sets)


def _expand(value_set: dict[str, Any], systems: dict[str, list[str]]
            ) -> frozenset[tuple[str, str]] | None:
    contains = value_set.get("expansion", {}).get("contains", [])
    if contains:
        return frozenset((c.get("system", ""), c["code"]) for c in contains if "code" in c)
    codes: set[tuple[str, str]] = set()
    compose = value_set.get("compose", {})
    if compose.get("exclude"):
        return None
    for include in compose.get("include", []):
        system = include.get("system", "")
        if include.get("filter") or include.get("valueSet") or not system:
            return None
        if "concept" in include:
            codes |= {(system, c["code"]) for c in include["concept"]}
        elif system in systems:
            codes |= {(system, code) for code in systems[system]}
        else:
            return None
    return frozenset(codes) if codes else None
