"""Our CapabilityStatement, generated from the routes that exist so it cannot drift.

A FHIR view declares what it implements with `@interaction(type, code, search_params)`; the
statement lists exactly the views found in the app's URL map.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Interaction:
    resource_type: str  # "" for system-level interactions
    code: str  # read, search-type, vread, history-instance, capabilities, operation
    search_params: dict[str, tuple[str, str]] = field(default_factory=dict)
    operation: str = ""


def interaction(resource_type: str, code: str, search_params: dict[str, tuple[str, str]]
                | None = None, operation: str = "") -> Callable[[F], F]:
    def mark(view: F) -> F:
        declared = list(getattr(view, "fhir_interactions", []))
        declared.append(Interaction(resource_type, code, search_params or {}, operation))
        view.fhir_interactions = declared  # type: ignore[attr-defined]
        return view

    return mark


def build_capability_statement(views: Iterable[Callable[..., Any]], *, base_url: str,
                               software_version: str, security: dict[str, Any] | None = None
                               ) -> dict[str, Any]:
    resources: dict[str, dict[str, Any]] = {}
    for view in views:
        for item in getattr(view, "fhir_interactions", []):
            if not item.resource_type:
                continue
            entry = resources.setdefault(item.resource_type, {
                "type": item.resource_type, "interaction": [], "searchParam": [],
                "operation": []})
            if item.code == "operation":
                entry["operation"].append({"name": item.operation.lstrip("$"),
                                           "definition": item.operation})
                continue
            if {"code": item.code} not in entry["interaction"]:
                entry["interaction"].append({"code": item.code})
            for name, (kind, doc) in sorted(item.search_params.items()):
                entry["searchParam"].append({"name": name, "type": kind, "documentation": doc})
    rest_resources = []
    for name in sorted(resources):
        entry = {k: v for k, v in resources[name].items() if v}
        rest_resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": datetime.now(UTC).date().isoformat(),
        "kind": "instance",
        "software": {"name": "Refloop", "version": software_version},
        "implementation": {"description": "Refloop referral integration server",
                           "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{"mode": "server", **({"security": security} if security else {}),
                  "resource": rest_resources}],
    }
