"""Invariants (ElementDefinition.constraint) evaluated with fhirpathpy where they evaluate.

Base-spec constraints are evaluated at resource roots only (profile constraints everywhere);
ele-1 and ext-1 hold for any parsed JSON we accept, dom-6 is narrative advice.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

import fhirpathpy
from fhirpathpy.models import models

from pas_client.conformance.profiles import Element

if TYPE_CHECKING:
    from pas_client.conformance.check import Walk

SKIP = frozenset({"ele-1", "ext-1", "dom-6"})
BASE = "http://hl7.org/fhir/StructureDefinition/"
Compiled = Callable[[Any, dict[str, Any]], list[Any]]


@cache
def compiled(expression: str) -> Compiled | None:
    try:
        return fhirpathpy.compile(expression, models["r4"])
    except Exception:
        return None


def check(walk: Walk, ed: Element, value: Any, loc: str) -> None:
    at_root = "." not in ed["id"]
    for constraint in ed.get("constraint", []):
        key = constraint["key"]
        if key in SKIP or (not at_root and constraint.get("source", "").startswith(BASE)
                           and not key.startswith("us-core")):
            continue
        if "trace(" in constraint["expression"]:
            continue
        function = compiled(constraint["expression"])
        if function is None:
            continue
        try:
            result = function(value, {"resource": walk.root, "rootResource": walk.root})
        except Exception:
            continue
        if result == [False]:
            severity = "error" if constraint.get("severity") == "error" else "warning"
            walk.add(severity, loc, f"invariant:{key}",
                     constraint.get("human", constraint["expression"]), ed["id"])
