"""Walk FHIR JSON along a compiled plan and collect findings.

Every value is checked for its JSON shape and primitive form; every complex value through its
children (from the profile, or from the base definition of its datatype), its fixed and pattern
values, its required binding and the invariants of its element and of its type; references
for their target's type; extensions against their definitions where known.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from pas_client.conformance import primitives
from pas_client.conformance.consistency import check_contained, check_sequences
from pas_client.conformance.discriminator import slice_matches
from pas_client.conformance.fhirpath_values import Env, EvaluationError, Unsupported
from pas_client.conformance.finding import Finding
from pas_client.conformance.plan import Complex, Invariant, Node, Plan
from pas_client.conformance.profiles import Profile, last_segment, strip_version
from pas_client.conformance.references import BundleIndex, reference_type

SKIP_KEYS = frozenset({"resourceType", "fhir_comments"})
RESOURCE_CODES = frozenset({"Resource", "DomainResource"})


@dataclass
class Walk:
    plan: Plan
    index: BundleIndex | None = None
    dangling: str = "error"
    findings: list[Finding] = field(default_factory=list)
    notes: dict[str, Finding] = field(default_factory=dict)
    checked: set[tuple[int, str]] = field(default_factory=set)
    pending: dict[int, dict[tuple[str, ...], None]] = field(default_factory=dict)
    resource: Any = None
    container: Any = None
    top: Any = None
    entry_url: str = ""
    local_refs: list[tuple[str, str, Node]] = field(default_factory=list)

    # --- findings -------------------------------------------------------------------------
    def add(self, severity: str, path: str, rule: str, message: str, element: str = "") -> None:
        self.findings.append(Finding(severity, path, rule, message, element))

    def note(self, what: str, path: str, element: str = "") -> None:
        """A rule that could not be checked, once per check."""
        if what not in self.notes:
            self.notes[what] = Finding("information", path, "not-checked", what, element)

    def result(self) -> list[Finding]:
        seen: set[tuple[str, str, str, str]] = set()
        out: list[Finding] = []
        for finding in [*self.findings, *self.notes.values()]:
            key = (finding.severity, finding.path, finding.rule, finding.message)
            if key not in seen:
                seen.add(key)
                out.append(finding)
        return out

    # --- resources ------------------------------------------------------------------------
    def known_type(self, resource: Any, loc: str) -> str | None:
        if not isinstance(resource, dict):
            self.add("error", loc, "type", f"expected a resource (JSON object), found "
                     f"{primitives.json_kind(resource)}")
            return None
        kind = resource.get("resourceType")
        if not isinstance(kind, str) or kind not in self.plan.resource_types:
            close = difflib.get_close_matches(str(kind), self.plan.resource_types, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.add("error", f"{loc}.resourceType", "resource-type",
                     f"{kind!r} is not a FHIR R4 resource type{hint}")
            return None
        return kind

    def choose(self, resource: dict[str, Any], candidates: list[str]) -> Profile | None:
        kind = resource["resourceType"]
        declared = [strip_version(u) for u in resource.get("meta", {}).get("profile", [])
                    if isinstance(u, str)]
        fits = [p for p in (self.plan.try_get(u) for u in candidates) if p and p.type == kind]
        for profile in fits:
            if profile.url in declared:
                return profile
        if kind == "Claim" and len(fits) > 1:
            update = "related" in resource
            fits = [p for p in fits if p.url.endswith("-update") == update] or fits
        if fits:
            return fits[0]
        known = [p for p in (self.plan.try_get(u) for u in declared) if p and p.type == kind]
        return known[0] if known else self.plan.base(kind)

    def check_resource(self, resource: dict[str, Any], loc: str, profile: Profile) -> None:
        key = (id(resource), profile.url)
        if key in self.checked:
            return
        self.checked.add(key)
        contained = resource is not self.container and self.container is not None \
            and self.resource is not None
        saved = (self.resource, self.container, self.local_refs)
        self.resource = resource
        if not contained:
            self.container, self.local_refs = resource, []
        try:
            if "id" in resource and isinstance(resource["id"], str) and \
                    primitives.lexical_problem("id", resource["id"]):
                self.add("error", f"{loc}.id", "type", f"{resource['id']!r} is not a valid id "
                         "(letters, digits, '-' and '.', at most 64)", f"{profile.type}.id")
            self.invariants(self.plan.root_invariants(profile), resource, loc, profile.root["id"])
            self.complex(self.plan.root_complex(profile), resource, loc)
            if not contained:
                check_contained(self, resource, loc)
                check_sequences(self, resource, loc)
        finally:
            self.resource, self.container, self.local_refs = saved

    def embedded(self, node: Node, value: Any, loc: str) -> None:
        kind = self.known_type(value, loc)
        if kind is None:
            return
        candidates = [u for code, urls in node.types.items() for u in urls]
        if self.index is not None and self.resource is self.top and \
                node.ed.get("path") == "Bundle.entry.resource":
            position = self.index.position.get(id(value))
            if position is not None:
                self.pending.setdefault(position, {})[tuple(candidates)] = None
                return
        if kind not in node.types and not (RESOURCE_CODES & set(node.types)):
            self.add("error", loc, "type", f"a {kind} is not allowed here "
                     f"({', '.join(node.types)})", node.id)
            return
        profile = self.choose(value, candidates)
        if profile is None:
            self.note(f"{kind}: no definition shipped, not checked", loc)
            return
        self.check_resource(value, loc, profile)

    # --- values ---------------------------------------------------------------------------
    def value(self, node: Node, code: str, value: Any, loc: str) -> None:
        if value is None:
            self.add("error", loc, "type", "null is not allowed; leave the element out", node.id)
            return
        if primitives.is_primitive(code):
            problem = primitives.problem(code, value)
            if problem:
                self.add("error", loc, "type", problem, node.id)
                return
            if code in ("canonical", "uri") and value.startswith("#"):
                self.local_refs.append((value[1:], "", node))
            self.constraints(node, code, value, loc, node.invariants)
            return
        if code in RESOURCE_CODES or code in self.plan.resource_types:
            self.embedded(node, value, loc)
            return
        if not isinstance(value, dict):
            self.add("error", loc, "type", f"expected a {code} (JSON object), found "
                     f"{primitives.json_kind(value)}", node.id)
            return
        if not value or set(value) <= {"id", "fhir_comments"}:
            self.add("error", loc, "invariant:ele-1",
                     "an element must have a value or children; leave it out", node.id)
            return
        complex_, own = self.complex_of(node, code, value, loc)
        self.constraints(node, code, value, loc, own)
        if code == "Reference":
            self.reference(node, value, loc)
        if complex_ is not None:
            self.complex(complex_, value, loc)

    def complex_of(self, node: Node, code: str, value: dict[str, Any], loc: str
                   ) -> tuple[Complex | None, list[Invariant]]:
        if code == "Extension" and not node.types.get("Extension") and \
                not node.profile.children_of(node.ed):
            url = value.get("url")
            definition = self.plan.try_get(url) if isinstance(url, str) else None
            if definition is not None and definition.type == "Extension":
                return (self.plan.root_complex(definition),
                        [*node.invariants, *self.plan.root_invariants(definition)])
            if isinstance(url, str):
                modifier = last_segment(node.id).startswith("modifierExtension")
                if modifier:
                    self.add("error", loc, "extension", f"modifier extension {url} is not "
                             "known; a receiver must reject what it does not understand",
                             node.id)
                else:
                    self.note(f"extension {url} is not known here: only its shape is checked",
                              loc, node.id)
        found = self.plan.value_plan(node, code)
        if found[0] is None:
            self.note(f"type {code} has no definition shipped: its content is not checked",
                      loc, node.id)
        return found

    def constraints(self, node: Node, code: str, value: Any, loc: str,
                    invariants: list[Invariant]) -> None:
        for _key, expected in node.fixed:
            if value != expected:
                self.add("error", loc, "fixed", f"must be exactly {expected!r}", node.id)
        for _key, expected in node.pattern:
            if not primitives.contains(value, expected):
                self.add("error", loc, "pattern", f"must match {expected!r}", node.id)
        if node.binding is not None:
            verdict = node.binding.check(value, code)
            if not verdict.ok:
                self.add("error", loc, "binding", verdict.message, node.id)
            elif verdict.unchecked:
                self.note(verdict.unchecked, loc, node.id)
        self.invariants(invariants, value, loc, node.id)

    def invariants(self, invariants: list[Invariant], value: Any, loc: str,
                   element: str) -> None:
        for invariant in invariants:
            if invariant.run is None:
                self.note(f"invariant {invariant.key} is not evaluated: "
                          f"{invariant.unsupported}", loc, element)
                continue
            env = Env(value, self.resource, self.container, self.member_of)
            try:
                result = invariant.run([value], env)
            except (EvaluationError, Unsupported, TypeError, ValueError) as exc:
                self.note(f"invariant {invariant.key} could not be evaluated here: {exc}",
                          loc, element)
                continue
            if result == [False]:
                self.add(invariant.severity, loc, f"invariant:{invariant.key}",
                         invariant.human, element)

    def member_of(self, value: Any, url: str) -> bool | None:
        from pas_client.conformance.terminology import compile_binding
        binding = compile_binding(url, self.plan.value_sets)
        if not binding.checkable:
            return None
        code = "CodeableConcept" if isinstance(value, dict) and "coding" in value else \
            "Coding" if isinstance(value, dict) else "code"
        verdict = binding.check(value, code)
        return None if verdict.unchecked else verdict.ok

    # --- children -------------------------------------------------------------------------
    def complex(self, complex_: Complex, node: dict[str, Any], loc: str) -> None:
        groups: dict[int, tuple[Node, list[tuple[str, str, Any]]]] = {}
        for key, raw in node.items():
            if key in SKIP_KEYS:
                continue
            if key.startswith("_"):
                self.primitive_extension(complex_, key, raw, loc)
                if key[1:] not in node and key[1:] in complex_.by_key:
                    child, code = complex_.by_key[key[1:]]
                    groups.setdefault(id(child), (child, []))[1].append(
                        (key[1:], code, SEEN_BY_EXTENSION))
                continue
            found = complex_.by_key.get(key)
            if found is None:
                self.unknown(complex_, key, loc)
                continue
            child, code = found
            items = self.shape(child, key, raw, loc)
            groups.setdefault(id(child), (child, []))[1].extend((key, code, i) for i in items)
        for child in complex_.required:
            if id(child) not in groups:
                self.add("error", f"{loc}.{child.name}", "cardinality",
                         f"required {child.min}..{child.max or '*'}, found 0", child.id)
        for child, values in groups.values():
            self.children(child, values, loc)
        for child in complex_.must_support:
            if id(child) not in groups:
                self.add("warning", f"{loc}.{child.name}", "must-support",
                         "must-support element not sent; send it when the data exists",
                         child.id)

    def shape(self, child: Node, key: str, raw: Any, loc: str) -> list[Any]:
        if isinstance(raw, list):
            if not child.array:
                self.add("error", f"{loc}.{key}", "type",
                         "a single value is expected here, not an array", child.id)
            elif not raw:
                self.add("error", f"{loc}.{key}", "type",
                         "empty arrays are not allowed; leave the element out", child.id)
            return raw
        if child.array:
            self.add("error", f"{loc}.{key}", "type", "an array is expected here", child.id)
        return [raw]

    def children(self, child: Node, found: list[tuple[str, str, Any]], loc: str) -> None:
        where = f"{loc}.{child.name}"
        count = len(found)
        if child.max is not None and count > child.max:
            text = "not allowed by the profile" if child.max == 0 else \
                f"at most {child.max} allowed"
            self.add("error", where, "cardinality", f"{text}, found {count}", child.id)
        matched = self.slicing(child, found, where) if child.slices else {}
        for i, (key, code, value) in enumerate(found):
            if value is SEEN_BY_EXTENSION:
                continue
            target = matched.get(i, child)
            path = f"{loc}.{key}[{i}]" if child.array else f"{loc}.{key}"
            self.value(target, code, value, path)

    def slicing(self, child: Node, found: list[tuple[str, str, Any]], where: str
                ) -> dict[int, Node]:
        matched: dict[int, Node] = {}
        counts = {id(s): 0 for s in child.slices}
        for i, (key, _, value) in enumerate(found):
            for slice_ in child.slices:
                if slice_matches(self.plan, child.profile, child.ed, slice_.ed, key, value):
                    matched[i] = slice_
                    counts[id(slice_)] += 1
                    break
            else:
                if child.closed:
                    self.add("error", f"{where}[{i}]", "slice",
                             "matches none of the slices of a closed slicing", child.id)
        for slice_ in child.slices:
            count = counts[id(slice_)]
            if count < slice_.min:
                self.add("error", where, "cardinality",
                         f"required {slice_.min}..{slice_.max or '*'}, found {count}", slice_.id)
            elif slice_.max is not None and count > slice_.max:
                self.add("error", where, "cardinality",
                         f"at most {slice_.max} allowed, found {count}", slice_.id)
        return matched

    def unknown(self, complex_: Complex, key: str, loc: str) -> None:
        close = difflib.get_close_matches(key, list(complex_.by_key), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        parent = complex_.nodes[0].id.rsplit(".", 1)[0] if complex_.nodes else ""
        self.add("error", f"{loc}.{key}", "unknown-element",
                 f"'{key}' is not an element of {parent}{hint}", parent)

    def primitive_extension(self, complex_: Complex, key: str, raw: Any, loc: str) -> None:
        found = complex_.by_key.get(key[1:])
        if found is None or not primitives.is_primitive(found[1]):
            self.unknown(complex_, key, loc)
            return
        items = raw if isinstance(raw, list) else [raw]
        element = self.plan.base("Element")
        for i, item in enumerate(items):
            if item is None:
                continue
            path = f"{loc}.{key}[{i}]" if isinstance(raw, list) else f"{loc}.{key}"
            if element is not None:
                self.value(self.plan.node(element, element.root), "Element", item, path)

    # --- references -----------------------------------------------------------------------
    def reference(self, node: Node, value: dict[str, Any], loc: str) -> None:
        reference = value.get("reference")
        if not isinstance(reference, str):
            return
        if reference.startswith("#"):
            self.local_refs.append((reference[1:], loc, node))
            return
        allowed = self.allowed_types(node)
        named = reference_type(reference, self.plan.resource_types)
        declared = value.get("type")
        if isinstance(declared, str) and named and declared != named:
            self.add("error", f"{loc}.type", "reference-type",
                     f"type {declared!r} contradicts the reference {reference!r}", node.id)
        if self.index is None or self.resource is None:
            self.check_target_type(node, named, allowed, loc, reference)
            return
        position = self.index.resolve(reference, self.entry_url)
        if position is None:
            self.check_target_type(node, named, allowed, loc, reference)
            first = self.index.first()
            severity = self.dangling if self.container is first else "warning"
            self.add(severity, loc, "reference",
                     f"reference {reference!r} does not resolve inside the Bundle; include the "
                     "resource and reference its fullUrl", node.id)
            return
        target = self.index.resource(position)
        kind = target.get("resourceType") if isinstance(target, dict) else None
        if kind not in self.plan.resource_types:
            return  # reported at the target itself
        if not self.check_target_type(node, kind, allowed, loc, reference, position):
            return
        self.pending.setdefault(position, {})[tuple(node.targets)] = None

    def allowed_types(self, node: Node) -> set[str] | None:
        types = {self.plan.type_of(t) for t in node.targets}
        if not node.targets or None in types or types & RESOURCE_CODES:
            return None
        return {t for t in types if t}

    def check_target_type(self, node: Node, kind: str | None, allowed: set[str] | None,
                          loc: str, reference: str, position: int | None = None) -> bool:
        if kind is None or allowed is None or kind in allowed:
            return True
        where = f" (Bundle.entry[{position}])" if position is not None else ""
        self.add("error", loc, "reference-type",
                 f"{reference!r} points to a {kind}{where}; {node.ed.get('path', node.id)} "
                 f"must point to {' or '.join(sorted(allowed))}", node.id)
        return False


SEEN_BY_EXTENSION = object()
