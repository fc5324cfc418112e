"""Resolving references inside a Bundle: by fullUrl (urn:uuid or absolute), a relative
reference against the referring entry's base URL, and `Type/id` as a fallback."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

TYPE_ID = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


def reference_type(reference: str, resource_types: frozenset[str]) -> str | None:
    """The resource type a literal reference names (`Patient/1`, `https://x/fhir/Patient/1`)."""
    if reference.startswith(("urn:", "#")):
        return None
    match = TYPE_ID.search(reference)
    if match and match.group(1) in resource_types:
        return match.group(1)
    return None


def base_of(full_url: str) -> str:
    """`https://x/fhir/Claim/1` -> `https://x/fhir/`; empty for urn: fullUrls."""
    match = TYPE_ID.search(full_url)
    if full_url.startswith("urn:") or match is None:
        return ""
    return full_url[:match.start() + (1 if full_url[match.start()] == "/" else 0)]


@dataclass
class BundleIndex:
    """Entries of the bundle being checked, for resolving references."""

    entries: list[dict[str, Any]]
    by_full_url: dict[str, int] = field(default_factory=dict)
    by_type_id: dict[str, int] = field(default_factory=dict)
    position: dict[int, int] = field(default_factory=dict)  # id(resource) -> entry index

    @classmethod
    def of(cls, bundle: dict[str, Any]) -> BundleIndex:
        raw = bundle.get("entry")
        entries = [e if isinstance(e, dict) else {} for e in raw] if isinstance(raw, list) else []
        index = cls(entries)
        for i, entry in enumerate(entries):
            resource = entry.get("resource")
            if not isinstance(resource, dict):
                continue
            index.position[id(resource)] = i
            if isinstance(entry.get("fullUrl"), str):
                index.by_full_url.setdefault(entry["fullUrl"], i)
            if isinstance(resource.get("id"), str) and isinstance(resource.get("resourceType"),
                                                                  str):
                index.by_type_id.setdefault(f"{resource['resourceType']}/{resource['id']}", i)
        return index

    def first(self) -> Any:
        return self.entries[0].get("resource") if self.entries else None

    def resource(self, position: int) -> Any:
        return self.entries[position].get("resource")

    def full_url(self, position: int) -> str:
        value = self.entries[position].get("fullUrl")
        return value if isinstance(value, str) else ""

    def resolve(self, reference: str, referrer_full_url: str = "") -> int | None:
        if reference in self.by_full_url:
            return self.by_full_url[reference]
        if reference.startswith(("urn:", "#")):
            return None
        base = base_of(referrer_full_url)
        if base and not re.match(r"^[a-z]+:", reference):
            absolute = base + reference
            if absolute in self.by_full_url:
                return self.by_full_url[absolute]
        match = TYPE_ID.search(reference)
        if match is None:
            return None
        return self.by_type_id.get(f"{match.group(1)}/{match.group(2)}")
