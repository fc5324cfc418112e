"""Walk a PAS bundle (or one resource) against the profiles' snapshots.

What is checked: cardinalities (min/max, max 0), JSON types and primitive formats, choice types,
fixed and pattern values, slices (membership by discriminator, slice cardinalities, closed
slicing), required bindings whose value set the package can expand, invariants evaluated with
fhirpathpy where they evaluate, references that must resolve inside the Bundle and the profiles
of the resources they point to, duplicates. Must-support elements left out are warnings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pas_client.conformance import invariants, types
from pas_client.conformance.discriminator import slice_matches
from pas_client.conformance.finding import Finding
from pas_client.conformance.profiles import (
    Element,
    Profile,
    ProfileSet,
    last_segment,
    profile_set,
    strip_version,
)

PAS = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/"
BUNDLE_PROFILES = {"request": PAS + "profile-pas-request-bundle",
                   "response": PAS + "profile-pas-response-bundle",
                   "inquiry-request": PAS + "profile-pas-inquiry-request-bundle",
                   "inquiry-response": PAS + "profile-pas-inquiry-response-bundle"}
SKIP_KEYS = frozenset({"resourceType", "fhir_comments"})


@dataclass
class BundleIndex:
    """Entries of the bundle being checked, for resolving references."""

    entries: list[dict[str, Any]]
    by_full_url: dict[str, int] = field(default_factory=dict)
    by_type_id: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, bundle: dict[str, Any]) -> BundleIndex:
        entries = [e for e in bundle.get("entry", []) if isinstance(e, dict)]
        index = cls(entries)
        for i, entry in enumerate(entries):
            resource = entry.get("resource") or {}
            if entry.get("fullUrl"):
                index.by_full_url.setdefault(entry["fullUrl"], i)
            if resource.get("id") and resource.get("resourceType"):
                index.by_type_id.setdefault(f"{resource['resourceType']}/{resource['id']}", i)
        return index

    def resolve(self, reference: str) -> int | None:
        if reference in self.by_full_url:
            return self.by_full_url[reference]
        if reference.startswith(("urn:", "#")):
            return None
        tail = "/".join(reference.rstrip("/").split("/")[-2:])
        return self.by_type_id.get(tail)


@dataclass
class Walk:
    profiles: ProfileSet
    findings: list[Finding] = field(default_factory=list)
    index: BundleIndex | None = None
    targets: dict[int, list[str]] = field(default_factory=dict)
    #: severity of a reference that does not resolve: from the Claim (request) or elsewhere
    dangling: str = "error"
    checked: set[tuple[int, str]] = field(default_factory=set)  # (id(resource), profile)
    root: dict[str, Any] = field(default_factory=dict)

    def add(self, severity: str, path: str, rule: str, message: str, element: str = "") -> None:
        self.findings.append(Finding(severity, path, rule, message, element))

    # --- elements -----------------------------------------------------------------------
    def element(self, profile: Profile, ed: Element, value: Any, loc: str,
                type_code: str | None = None) -> None:
        if ed is profile.root and isinstance(value, dict) and "resourceType" in value:
            self.resource(profile, value, loc)
            return
        code = type_code or types.single_code(ed)
        problem = types.shape_problem(code, value) if code else None
        if problem:
            self.add("error", loc, "type", problem, ed["id"])
            return
        self.fixed_and_pattern(ed, value, loc)
        self.binding(ed, value, loc, code)
        invariants.check(self, ed, value, loc)
        if code == "Reference" and isinstance(value, dict):
            self.reference(ed, value, loc)
        children = profile.children_of(ed)
        if children and isinstance(value, dict):
            self.children(profile, ed, children, value, loc)
            return
        self.typed_profile(ed, value, loc, code)

    def resource(self, profile: Profile, value: dict[str, Any], loc: str) -> None:
        if value.get("resourceType") != profile.type:
            self.add("error", loc, "type", f"expected a {profile.type}, found "
                     f"{value.get('resourceType')}", profile.root["id"])
            return
        self.checked.add((id(value), profile.url))
        outer, self.root = self.root, value
        try:
            invariants.check(self, profile.root, value, loc)
            self.children(profile, profile.root, profile.children_of(profile.root), value, loc)
        finally:
            self.root = outer

    def typed_profile(self, ed: Element, value: Any, loc: str, code: str | None) -> None:
        """Elements whose type names a profile (extensions, datatypes, resources)."""
        if not isinstance(value, dict):
            return
        for type_ in ed.get("type", []):
            if code and type_["code"] != code and type_["code"] != "Resource":
                continue
            urls = value.get("meta", {}).get("profile", []) if type_.get("profile") else []
            candidates = [self.profiles.try_get(u) for u in [*urls, *type_.get("profile", [])]]
            chosen = choose_profile([c for c in candidates if c], value)
            if chosen is not None:
                self.element(chosen, chosen.root, value, loc)
                return

    def children(self, profile: Profile, parent: Element, children: list[Element],
                 node: dict[str, Any], loc: str) -> None:
        known: set[str] = set()
        for child in children:
            name = last_segment(child["id"])
            found = types.values_for(node, name)
            known.update(key for key, _ in found)
            self.child(profile, parent, child, found, loc)
        for key in node:
            bare = key[1:] if key.startswith("_") else key
            if bare not in known and key not in SKIP_KEYS and not key.startswith("_"):
                self.add("error", f"{loc}.{key}", "unknown-element",
                         f"'{key}' is not an element of {parent['path']}", parent["id"])

    def child(self, profile: Profile, parent: Element, child: Element,
              found: list[tuple[str, Any]], loc: str) -> None:
        name = last_segment(child["id"])
        where = f"{loc}.{name.replace('[x]', '')}"
        self.cardinality(child, len(found), where)
        slices = profile.slices.get(child["id"], [])
        matched: dict[int, Element] = {}
        if slices and "slicing" in child:
            matched = self.slicing(profile, child, slices, found, where)
        for i, (key, value) in enumerate(found):
            ed = matched.get(i, child)
            type_code = types.choice_code(child, key)
            self.element(profile, ed, value, f"{loc}.{key}[{i}]" if len(found) > 1 or
                         types.is_array(child) else f"{loc}.{key}", type_code)
        if not found and child.get("mustSupport") and child.get("min", 0) == 0 \
                and name not in ("extension", "modifierExtension"):
            self.add("warning", where, "must-support",
                     "must-support element not sent; send it when the data exists", child["id"])

    def cardinality(self, ed: Element, count: int, where: str) -> None:
        low, high = ed.get("min", 0), ed.get("max", "*")
        if count < low:
            self.add("error", where, "cardinality",
                     f"required {low}..{high}, found {count}", ed["id"])
        elif high != "*" and count > int(high):
            text = "not allowed by the profile" if high == "0" else f"at most {high} allowed"
            self.add("error", where, "cardinality", f"{text}, found {count}", ed["id"])

    def slicing(self, profile: Profile, child: Element, slices: list[Element],
                found: list[tuple[str, Any]], where: str) -> dict[int, Element]:
        matched: dict[int, Element] = {}
        counts = {s["id"]: 0 for s in slices}
        for i, (key, value) in enumerate(found):
            for slice_ in slices:
                if slice_matches(self.profiles, profile, child, slice_, key, value):
                    matched[i] = slice_
                    counts[slice_["id"]] += 1
                    break
            else:
                if child["slicing"].get("rules") == "closed":
                    self.add("error", f"{where}[{i}]", "slice",
                             "matches none of the slices of a closed slicing", child["id"])
        for slice_ in slices:
            self.cardinality(slice_, counts[slice_["id"]], where)
        return matched

    def fixed_and_pattern(self, ed: Element, value: Any, loc: str) -> None:
        for key, expected in ed.items():
            if key.startswith("fixed") and value != expected:
                self.add("error", loc, "fixed", f"must be exactly {expected!r}", ed["id"])
            elif key.startswith("pattern") and not types.contains(value, expected):
                self.add("error", loc, "pattern", f"must match {expected!r}", ed["id"])

    def binding(self, ed: Element, value: Any, loc: str, code: str | None) -> None:
        binding = ed.get("binding") or {}
        if binding.get("strength") != "required" or "valueSet" not in binding:
            return
        allowed = self.profiles.codes(binding["valueSet"])
        if allowed is None:
            return
        if not types.in_value_set(value, code, allowed):
            self.add("error", loc, "binding",
                     f"code not in the required value set {strip_version(binding['valueSet'])}",
                     ed["id"])

    # --- references ---------------------------------------------------------------------
    def reference(self, ed: Element, value: dict[str, Any], loc: str) -> None:
        reference = value.get("reference")
        if not isinstance(reference, str) or self.index is None or reference.startswith("#"):
            return
        target = self.index.resolve(reference)
        if target is None:
            first = self.index.entries[0].get("resource") if self.index.entries else None
            severity = self.dangling if self.root is first else "warning"
            self.add(severity, loc, "reference",
                     f"reference {reference!r} does not resolve inside the Bundle; include the "
                     "resource and reference its fullUrl", ed["id"])
            return
        profiles = [u for t in ed.get("type", []) for u in t.get("targetProfile", [])]
        self.targets.setdefault(target, []).extend(profiles)


def choose_profile(candidates: list[Profile], value: dict[str, Any]) -> Profile | None:
    if not candidates:
        return None
    kind = value.get("resourceType")
    fitting = [c for c in candidates if kind is None or c.type == kind]
    if not fitting:
        return None
    declared = {strip_version(u) for u in value.get("meta", {}).get("profile", [])}
    for candidate in fitting:
        if candidate.url in declared:
            return candidate
    if kind == "Claim" and "related" not in value:
        fitting = [c for c in fitting if not c.url.endswith("-update")] or fitting
    if kind == "Claim" and "related" in value:
        fitting = [c for c in fitting if c.url.endswith("-update")] or fitting
    return fitting[0]


def check_bundle(bundle: dict[str, Any], version: str = "2.2.1",
                 kind: str = "request") -> list[Finding]:
    """All findings for a PAS bundle of `kind` (request, response, inquiry-request...)."""
    walk = Walk(profile_set(version), index=BundleIndex.of(bundle), root=bundle,
                dangling="error" if kind in ("request", "inquiry-request") else "warning")
    if bundle.get("resourceType") != "Bundle":
        walk.add("error", "Bundle", "type", "not a Bundle")
        return walk.findings
    profile = walk.profiles.try_get(BUNDLE_PROFILES[kind])
    assert profile is not None
    walk.element(profile, profile.root, bundle, "Bundle")
    check_entries(walk)
    if kind in ("request", "inquiry-request"):
        check_claim_first(walk)
    return walk.findings


def check_claim_first(walk: Walk) -> None:
    """spec-12 (every version): the first entry is the Claim; 2.0.1 has no invariant for it."""
    assert walk.index is not None
    first = walk.index.entries[0].get("resource", {}) if walk.index.entries else {}
    if first.get("resourceType") != "Claim" and not any(
            f.rule == "invariant:ClaimFirst" for f in walk.findings):
        walk.add("error", "Bundle.entry[0]", "claim-first",
                 "the first entry of a PAS request Bundle must be the Claim", "Bundle.entry")


def check_entries(walk: Walk) -> None:
    assert walk.index is not None
    entries = walk.index.entries
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        resource = entry.get("resource") or {}
        key = f"{resource.get('resourceType')}/{resource.get('id')}"
        if resource.get("id") and key in seen:
            walk.add("error", f"Bundle.entry[{i}]", "duplicate",
                     f"{key} is already in entry {seen[key]}; include each resource once")
        seen.setdefault(key, i)
        declared = resource.get("meta", {}).get("profile", [])
        walk.targets.setdefault(i, []).extend(declared)
    pending = True
    while pending:
        pending = False
        for i, urls in list(walk.targets.items()):
            resource = entries[i].get("resource") or {}
            candidates = [p for p in (walk.profiles.try_get(u) for u in urls) if p]
            chosen = choose_profile(candidates, resource)
            if chosen is None or any(key == id(resource) for key, _ in walk.checked):
                continue
            walk.element(chosen, chosen.root, resource, f"Bundle.entry[{i}].resource")
            pending = True


def check_resource(resource: dict[str, Any], profile_url: str,
                   version: str = "2.2.1") -> list[Finding]:
    walk = Walk(profile_set(version), root=resource)
    profile = walk.profiles.try_get(profile_url)
    if profile is None:
        raise ValueError(f"profile {profile_url} is not in the PAS {version} package")
    walk.element(profile, profile.root, resource, resource.get("resourceType", "Resource"))
    return walk.findings
