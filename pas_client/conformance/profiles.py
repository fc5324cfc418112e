"""StructureDefinition snapshots indexed for compiling: children and slices of each element."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Element = dict[str, Any]


def strip_version(url: str) -> str:
    return url.split("|", 1)[0]


def last_segment(element_id: str) -> str:
    return element_id.rsplit(".", 1)[-1]


@dataclass(eq=False)
class Profile:
    url: str
    type: str
    kind: str
    root: Element
    by_id: dict[str, Element]
    package: str = ""
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
    profile = Profile(structure["url"], structure["type"], structure.get("kind") or "",
                      elements[0], by_id, structure.get("package", ""))
    for element in elements[1:]:
        eid = element["id"]
        parent, _, name = eid.rpartition(".")
        if ":" in name:
            base = f"{parent}.{name.split(':', 1)[0]}"
            profile.slices.setdefault(base, []).append(element)
        else:
            profile.children.setdefault(parent, []).append(element)
    return profile
