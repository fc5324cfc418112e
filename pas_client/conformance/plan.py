"""Compile the profiles once into a plan the check walks: for each element, the JSON keys of its
children, its cardinality and array shape, type, fixed and pattern values, compiled binding,
compiled invariants, slices and reference targets. Datatypes a profile does not expand take
their children from the base FHIR R4 definition (or the datatype profile the element names),
compiled once and shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pas_client.conformance.fhirpath import compile_expression
from pas_client.conformance.fhirpath_values import Fn, Unsupported, register_choice_names
from pas_client.conformance.primitives import fhir_type, is_primitive
from pas_client.conformance.profiles import (
    Element,
    Profile,
    build_profile,
    last_segment,
    strip_version,
)
from pas_client.conformance.terminology import Binding, compile_binding
from pas_client.profile_data import load_package_data

BASE = "http://hl7.org/fhir/StructureDefinition/"
#: invariants the walk checks natively (ele-1, dom-3, ref-1) or leaves out on purpose (dom-6:
#: narrative is advice, and PAS bundles carry none by minimum necessary)
NATIVE = frozenset({"ele-1", "dom-3", "dom-6", "ref-1"})
#: invariants whose published FHIRPath does not say what their text says; ours does
FIXES = {
    ("ImmediateLevelOfCare", "extension.where(url='http://hl7.org/fhir/us/davinci-pas/"
     "StructureDefinition/extension-certificationType' and value.code='1').exists() implies "
     "extension.where(url='http://hl7.org/fhir/us/davinci-pas/StructureDefinition/"
     "extension-levelOfServiceCode').exists()"):
    "extension.where(url='http://hl7.org/fhir/us/davinci-pas/StructureDefinition/"
    "extension-certificationType' and value.coding.code='1').exists() implies "
    "%resource.extension.where(url='http://hl7.org/fhir/us/davinci-pas/StructureDefinition/"
    "extension-levelOfServiceCode').exists() or extension.where(url='http://hl7.org/fhir/us/"
    "davinci-pas/StructureDefinition/extension-levelOfServiceCode').exists()",
}


@dataclass(frozen=True)
class Invariant:
    key: str
    severity: str
    human: str
    run: Fn | None
    unsupported: str = ""


@dataclass(eq=False)
class Node:
    """One element of a profile (or a slice of it), compiled."""

    id: str
    profile: Profile
    ed: Element
    min: int
    max: int | None
    array: bool
    types: dict[str, list[str]]  # type code -> profiles named for it
    fixed: list[tuple[str, Any]]
    pattern: list[tuple[str, Any]]
    binding: Binding | None
    invariants: list[Invariant]
    must_support: bool
    targets: list[str]  # target profiles of a Reference
    slices: list[Node] = field(default_factory=list)
    closed: bool = False
    name: str = ""  # the JSON name, [x] left out (for paths)
    #: per type code: the children of a value and every invariant it must meet (compiled once)
    compiled: dict[str, tuple[Complex | None, list[Invariant]]] = field(default_factory=dict)


@dataclass(eq=False)
class Complex:
    """The children of a complex value: JSON key -> (node, type code)."""

    by_key: dict[str, tuple[Node, str]]
    nodes: list[Node]
    required: list[Node]
    must_support: list[Node]
    invariants: list[Invariant]  # the type's own (Period: per-1, Extension: ext-1...)


@dataclass(eq=False)
class Plan:
    version: str
    profiles: dict[str, Profile]
    profile_types: dict[str, str]
    resource_types: frozenset[str]
    value_sets: dict[str, dict[str, Any]]
    nodes: dict[tuple[str, str], Node] = field(default_factory=dict)
    complexes: dict[tuple[str, str, str], Complex] = field(default_factory=dict)
    roots: dict[str, list[Invariant]] = field(default_factory=dict)

    def try_get(self, url: str) -> Profile | None:
        return self.profiles.get(strip_version(url))

    def base(self, type_code: str) -> Profile | None:
        return self.profiles.get(BASE + type_code)

    def type_of(self, url: str) -> str | None:
        profile = self.try_get(url)
        return profile.type if profile else self.profile_types.get(strip_version(url))

    # --- nodes ----------------------------------------------------------------------------
    def node(self, profile: Profile, ed: Element) -> Node:
        key = (profile.url, ed["id"])
        found = self.nodes.get(key)
        if found is None:
            found = self.nodes[key] = self.compile_node(profile, ed)
            found.slices = [self.node(profile, s) for s in profile.slices.get(ed["id"], [])]
            found.closed = ed.get("slicing", {}).get("rules") == "closed"
            found.name = last_segment(ed["id"]).split(":", 1)[0].replace("[x]", "")
        return found

    def compile_node(self, profile: Profile, ed: Element) -> Node:
        types: dict[str, list[str]] = {}
        targets: list[str] = []
        for type_ in ed.get("type", []):
            types.setdefault(fhir_type(type_["code"]), []).extend(type_.get("profile", []))
            targets.extend(type_.get("targetProfile", []))
        high = ed.get("max", "*")
        base_max = ed.get("baseMax", high)
        return Node(
            id=ed["id"], profile=profile, ed=ed, min=ed.get("min", 0),
            max=None if high == "*" else int(high),
            array=base_max not in ("0", "1"), types=types,
            fixed=[(k, v) for k, v in ed.items() if k.startswith("fixed")],
            pattern=[(k, v) for k, v in ed.items() if k.startswith("pattern")],
            binding=self.binding_of(profile, ed),
            invariants=compile_invariants(ed.get("constraint", [])),
            must_support=bool(ed.get("mustSupport")), targets=targets)

    def binding_of(self, profile: Profile, ed: Element) -> Binding | None:
        binding = ed.get("binding") or {}
        if binding.get("strength") != "required" or "valueSet" not in binding:
            return None
        compiled = compile_binding(binding["valueSet"], self.value_sets)
        if compiled.checkable or profile.url.startswith(BASE):
            return compiled
        fallback = self.base_binding(ed)  # a profile only narrows the base's required binding
        if fallback is not None and fallback.checkable:
            return compiled.with_fallback(fallback)
        return compiled

    def base_binding(self, ed: Element) -> Binding | None:
        path = ed.get("path", "")
        base = self.base(path.split(".", 1)[0])
        if base is None or base.url.startswith(ed["id"]):
            return None
        base_ed = base.by_id.get(path)
        if base_ed is None or base_ed is ed:
            return None
        return self.binding_of(base, base_ed)

    # --- children -------------------------------------------------------------------------
    def value_plan(self, node: Node, type_code: str) -> tuple[Complex | None, list[Invariant]]:
        """The children of a value of `node` and its invariants (the element's and its type's,
        each key once)."""
        found = node.compiled.get(type_code)
        if found is None:
            complex_ = self.complex_for(node.profile, node.ed, type_code)
            merged: dict[str, Invariant] = {}
            for invariant in [*node.invariants, *(complex_.invariants if complex_ else [])]:
                merged.setdefault(invariant.key, invariant)
            found = node.compiled[type_code] = (complex_, list(merged.values()))
        return found

    def complex_for(self, profile: Profile, ed: Element, type_code: str) -> Complex | None:
        """The children of a value of `ed` (of type `type_code`), or None for primitives."""
        if is_primitive(type_code):
            return None
        children = profile.children_of(ed)
        if children and (len(ed.get("type", [])) <= 1 or "contentReference" in ed):
            key = (profile.url, ed["id"], type_code)
            found = self.complexes.get(key)
            if found is None:
                type_root = self.type_root(type_code, self.type_profiles(ed, type_code))
                found = self.complexes[key] = self.build_complex(
                    profile, children, type_root[1] if type_root else [])
            return found
        root = self.type_root(type_code, self.type_profiles(ed, type_code))
        return root[0] if root else None

    def type_profiles(self, ed: Element, type_code: str) -> list[str]:
        return [p for t in ed.get("type", []) if fhir_type(t["code"]) == type_code
                for p in t.get("profile", [])]

    def type_root(self, type_code: str, profiles: list[str]
                  ) -> tuple[Complex, list[Invariant]] | None:
        definition = next((p for p in (self.try_get(u) for u in profiles) if p), None) \
            or self.base(type_code)
        if definition is None:
            return None
        return self.root_complex(definition), self.root_invariants(definition)

    def root_complex(self, profile: Profile) -> Complex:
        key = (profile.url, profile.root["id"], "")
        found = self.complexes.get(key)
        if found is None:
            found = self.complexes[key] = self.build_complex(
                profile, profile.children_of(profile.root), self.root_invariants(profile))
        return found

    def root_invariants(self, profile: Profile) -> list[Invariant]:
        found = self.roots.get(profile.url)
        if found is None:
            found = self.roots[profile.url] = compile_invariants(
                profile.root.get("constraint", []))
        return found

    def build_complex(self, profile: Profile, children: list[Element],
                      invariants: list[Invariant]) -> Complex:
        by_key: dict[str, tuple[Node, str]] = {}
        nodes = [self.node(profile, ed) for ed in children]
        for node in nodes:
            name = last_segment(node.id)
            if name.endswith("[x]"):
                for code in node.types:
                    by_key[name[:-3] + code[0].upper() + code[1:]] = (node, code)
            else:
                by_key[name] = (node, next(iter(node.types), ""))
        return Complex(by_key, nodes, [n for n in nodes if n.min > 0],
                       [n for n in nodes if n.must_support and n.min == 0
                        and last_segment(n.id) not in ("extension", "modifierExtension")],
                       invariants)


def compile_invariants(constraints: list[dict[str, Any]]) -> list[Invariant]:
    found: list[Invariant] = []
    for constraint in constraints:
        key = constraint["key"]
        if key in NATIVE:
            continue
        expression = FIXES.get((key, constraint["expression"]), constraint["expression"])
        severity = "error" if constraint.get("severity") == "error" else "warning"
        human = constraint.get("human", expression)
        try:
            found.append(Invariant(key, severity, human, compile_expression(expression)))
        except Unsupported as exc:
            found.append(Invariant(key, severity, human, None, str(exc)))
    return found


@cache
def plan_for(version: str) -> Plan:
    data = load_package_data(version)
    profiles = {strip_version(url): build_profile(s) for url, s in data["structures"].items()
                if s["elements"]}
    register_choice_names({last_segment(e["id"])[:-3] for s in data["structures"].values()
                           for e in s["elements"] if e["id"].endswith("[x]")})
    return Plan(version, profiles, data["profileTypes"], frozenset(data["resourceTypes"]),
                data["valueSets"])
