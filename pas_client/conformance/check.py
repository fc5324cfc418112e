"""The pre-flight check of a PAS bundle (or one resource) against the compiled plan.

A Bundle is walked first with its entries held back; then each entry is checked against every
profile that something asks of it (the Bundle profile's entry slices, the target profiles of the
references that reach it), and entries nobody asks about against their declared profile or the
base FHIR R4 definition of their type.
"""

from __future__ import annotations

from typing import Any

from pas_client.conformance.finding import Finding
from pas_client.conformance.plan import plan_for
from pas_client.conformance.references import BundleIndex
from pas_client.conformance.walk import Walk

PAS = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/"
BUNDLE_PROFILES = {"request": PAS + "profile-pas-request-bundle",
                   "response": PAS + "profile-pas-response-bundle",
                   "inquiry-request": PAS + "profile-pas-inquiry-request-bundle",
                   "inquiry-response": PAS + "profile-pas-inquiry-response-bundle"}
REQUESTS = ("request", "inquiry-request")


def check_bundle(bundle: Any, version: str = "2.2.1", kind: str = "request") -> list[Finding]:
    """All findings for a PAS bundle of `kind` (request, response, inquiry-request...):
    errors, warnings, and `information` findings naming what could not be checked."""
    plan = plan_for(version)
    walk = Walk(plan, dangling="error" if kind in REQUESTS else "warning")
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        found = bundle.get("resourceType") if isinstance(bundle, dict) else None
        walk.add("error", "Bundle", "type", f"not a Bundle (resourceType {found!r})")
        return walk.result()
    walk.index = BundleIndex.of(bundle)
    walk.top = bundle
    profile = plan.try_get(BUNDLE_PROFILES[kind])
    assert profile is not None
    walk.check_resource(bundle, "Bundle", profile)
    check_entries(walk)
    if kind in REQUESTS:
        check_claim_first(walk)
    return walk.result()


def check_entries(walk: Walk) -> None:
    assert walk.index is not None
    index = walk.index
    check_duplicates(walk)
    done: set[tuple[int, str]] = set()
    asked: set[tuple[int, tuple[str, ...]]] = set()
    unknown: set[int] = set()
    progress = True
    while progress:
        progress = False
        for position in sorted(walk.pending):
            resource = index.resource(position)
            if position in unknown or not isinstance(resource, dict):
                continue
            if walk.known_type(resource, f"Bundle.entry[{position}].resource") is None:
                unknown.add(position)
                continue
            for candidates in list(walk.pending[position]):
                if (position, candidates) in asked:
                    continue
                asked.add((position, candidates))
                profile = walk.choose(resource, list(candidates))
                if profile is None or (position, profile.url) in done:
                    continue
                done.add((position, profile.url))
                check_entry(walk, position, profile)
                progress = True
    for position, entry in enumerate(index.entries):
        resource = entry.get("resource")
        if position in walk.pending or not isinstance(resource, dict):
            continue
        loc = f"Bundle.entry[{position}].resource"
        if walk.known_type(resource, loc) is None:
            continue
        profile = walk.choose(resource, [])
        if profile is None:
            walk.note(f"{resource['resourceType']}: no definition shipped, not checked", loc)
            continue
        check_entry(walk, position, profile)


def check_entry(walk: Walk, position: int, profile: Any) -> None:
    assert walk.index is not None
    saved = walk.entry_url
    walk.entry_url = walk.index.full_url(position)
    try:
        walk.resource = walk.container = None
        walk.check_resource(walk.index.resource(position), f"Bundle.entry[{position}].resource",
                            profile)
    finally:
        walk.entry_url = saved


def check_duplicates(walk: Walk) -> None:
    """spec-14: each resource instance appears once in the Bundle."""
    assert walk.index is not None
    seen: dict[str, int] = {}
    for i, entry in enumerate(walk.index.entries):
        resource = entry.get("resource")
        if not isinstance(resource, dict) or not resource.get("id"):
            continue
        key = f"{resource.get('resourceType')}/{resource.get('id')}"
        if key in seen:
            walk.add("error", f"Bundle.entry[{i}]", "duplicate",
                     f"{key} is already in entry {seen[key]}; include each resource once")
        seen.setdefault(key, i)


def check_claim_first(walk: Walk) -> None:
    """spec-12 (every version): the first entry is the Claim; 2.0.1 has no invariant for it."""
    assert walk.index is not None
    first = walk.index.first()
    kind = first.get("resourceType") if isinstance(first, dict) else None
    if kind != "Claim" and not any(f.rule == "invariant:ClaimFirst" for f in walk.findings):
        walk.add("error", "Bundle.entry[0]", "claim-first",
                 "the first entry of a PAS request Bundle must be the Claim", "Bundle.entry")


def check_resource(resource: dict[str, Any], profile_url: str,
                   version: str = "2.2.1") -> list[Finding]:
    plan = plan_for(version)
    walk = Walk(plan)
    profile = plan.try_get(profile_url)
    if profile is None:
        raise ValueError(f"profile {profile_url} is not in the PAS {version} package")
    loc = str(resource.get("resourceType", "Resource"))
    if walk.known_type(resource, loc) is not None:
        walk.check_resource(resource, loc, profile)
    return walk.result()
