"""Rules across elements that the profiles state in prose, checked natively.

* Contained resources (FHIR R4 Resource rules, invariant dom-3 and ref-1): a local `#id`
  reference names a contained resource of the same resource, of a type the reference allows,
  and every contained resource is referenced.
* Claim sequences (FHIR R4 Claim element definitions; PAS spec-22 for supportingInfo):
  careTeam, diagnosis, procedure, supportingInfo and item sequences are unique, and an item's
  careTeamSequence, diagnosisSequence, procedureSequence and informationSequence name entries
  that exist. ClaimResponse item sequences are unique (PAS spec-34 makes them the trace key).
"""

from __future__ import annotations

from typing import Any, Protocol

from pas_client.conformance.plan import Node


class Walk(Protocol):
    """What these rules need from the walk over a resource (pas_client/conformance/walk.py)."""

    local_refs: list[tuple[str, str, Node]]

    def add(self, severity: str, path: str, rule: str, message: str,
            element: str = "") -> None: ...

    def allowed_types(self, node: Node) -> set[str] | None: ...

    def check_target_type(self, node: Node, kind: str | None, allowed: set[str] | None,
                          loc: str, reference: str, position: int | None = None) -> bool: ...

LISTS = ("careTeam", "diagnosis", "procedure", "supportingInfo", "item")
POINTERS = {"careTeamSequence": "careTeam", "diagnosisSequence": "diagnosis",
            "procedureSequence": "procedure", "informationSequence": "supportingInfo"}


def check_contained(walk: Walk, resource: dict[str, Any], loc: str) -> None:
    contained = resource.get("contained")
    items = contained if isinstance(contained, list) else []
    by_id = {c.get("id"): c for c in items if isinstance(c, dict)}
    referenced = {ref for ref, _, _ in walk.local_refs}
    for ref, path, node in walk.local_refs:
        if not path or ref == "":
            continue
        target = by_id.get(ref)
        if target is None:
            walk.add("error", path, "reference-contained",
                     f"'#{ref}' names no contained resource of this {resource['resourceType']}"
                     f" (contained: {', '.join(sorted(str(i) for i in by_id)) or 'none'})",
                     node.id)
            continue
        allowed = walk.allowed_types(node)
        walk.check_target_type(node, target.get("resourceType"), allowed, path, f"#{ref}")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        where = f"{loc}.contained[{i}]"
        if not isinstance(item.get("id"), str):
            walk.add("error", where, "invariant:dom-3", "a contained resource needs an id")
        elif item["id"] not in referenced and "" not in referenced:
            walk.add("error", where, "invariant:dom-3",
                     f"contained {item.get('resourceType')} '#{item['id']}' is not referenced "
                     "from the resource", f"{resource['resourceType']}.contained")


def check_sequences(walk: Walk, resource: dict[str, Any], loc: str) -> None:
    kind = resource.get("resourceType")
    if kind == "Claim":
        known = {name: unique(walk, resource, name, "sequence", loc) for name in LISTS}
        for i, item in enumerate(listed(resource, "item")):
            for pointer, target in POINTERS.items():
                for j, value in enumerate(listed(item, pointer)):
                    if isinstance(value, int) and value not in known[target]:
                        walk.add("error", f"{loc}.item[{i}].{pointer}[{j}]",
                                 "consistency:sequence-reference",
                                 f"{pointer} {value} names no {target} entry (sequences: "
                                 f"{', '.join(map(str, sorted(known[target]))) or 'none'})",
                                 f"Claim.item.{pointer}")
    elif kind == "ClaimResponse":
        unique(walk, resource, "item", "itemSequence", loc)


def unique(walk: Walk, resource: dict[str, Any], name: str, key: str, loc: str) -> set[int]:
    seen: dict[int, int] = {}
    for i, entry in enumerate(listed(resource, name)):
        value = entry.get(key) if isinstance(entry, dict) else None
        if not isinstance(value, int):
            continue
        if value in seen:
            walk.add("error", f"{loc}.{name}[{i}].{key}", "consistency:unique-sequence",
                     f"{name} {key} {value} is already used by {name}[{seen[value]}]; each "
                     f"{name} entry needs its own {key}",
                     f"{resource['resourceType']}.{name}.{key}")
        seen.setdefault(value, i)
    return set(seen)


def listed(node: Any, name: str) -> list[Any]:
    value = node.get(name) if isinstance(node, dict) else None
    return value if isinstance(value, list) else []
