"""What a PAS request is built from: the referral's ServiceRequest and what it points to, read
from the EHR resources we hold. Missing data is a finding for the coordinator, not a crash."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pas_client.conformance.finding import Finding
from referrals.model import source_server

Resource = dict[str, Any]
Lookup = Callable[[str, str], Resource | None]


#: performers the Claim's careTeam can name (directly, or a Practitioner through a role)
PERFORMER_TYPES = ("Practitioner", "PractitionerRole", "Organization")


@dataclass
class ClaimInputs:
    referral_id: str
    priority: str
    service_request: Resource
    patient: Resource
    coverage: Resource | None = None
    practitioner: Resource | None = None
    findings: list[Finding] = field(default_factory=list)
    #: the other resources the order and the coverage point to, by "Type/id": performers
    #: (and a role's practitioner and organization), the Coverage's subscriber
    related: dict[str, Resource] = field(default_factory=dict)
    #: the payer's CRD coverage-information extensions for the order (sent again in PAS)
    coverage_information: list[Resource] = field(default_factory=list)

    def get(self, reference: str) -> Resource | None:
        kind, rid = split_reference(reference)
        return self.related.get(f"{kind}/{rid}")


def server_of(source_key: str) -> str:
    """Where the referral's EHR resources are stored: fhir|<base>|... -> <base>,
    hl7|<sender>|... -> hl7:<sender>, demo|... -> demo (referrals.model.source_server)."""
    return source_server(source_key)


def split_reference(reference: str) -> tuple[str, str]:
    parts = reference.rstrip("/").split("/")
    return (parts[-2], parts[-1]) if len(parts) >= 2 else ("", reference)


def gather_inputs(referral_id: str, priority: str, service_request_ref: str, patient_ref: str,
                  lookup: Lookup, payer: tuple[str, ...] = ()) -> ClaimInputs | list[Finding]:
    """The resources for the Claim, or findings saying what is missing. `payer`: the names and
    ids of the payer asked (its [[payers]] name and payer_id), to choose its Coverage when
    the order lists several."""
    missing: list[Finding] = []
    service_request = lookup(*split_reference(service_request_ref))
    patient = lookup(*split_reference(patient_ref))
    if service_request is None:
        missing.append(_missing("ServiceRequest", service_request_ref))
    if patient is None:
        missing.append(_missing("Patient", patient_ref))
    if service_request is None or patient is None:
        return missing
    inputs = ClaimInputs(referral_id, priority, service_request, patient)
    _coverage(inputs, lookup, payer)
    requester = (service_request.get("requester") or {}).get("reference", "")
    if split_reference(requester)[0] == "Practitioner":
        inputs.practitioner = lookup(*split_reference(requester))
    _performers(inputs, lookup)
    _subscriber(inputs, lookup)
    return inputs


def _coverage(inputs: ClaimInputs, lookup: Lookup, payer: tuple[str, ...]) -> None:
    """The order's Coverage; of several, the one whose payor is the payer asked (another
    insurer's member id and plan must never reach this payer)."""
    references = [r["reference"] for r in inputs.service_request.get("insurance", [])
                  if isinstance(r, dict) and r.get("reference")]
    if not references:
        inputs.findings.append(Finding(
            "error", "ServiceRequest.insurance", "input",
            "the ServiceRequest names no Coverage; the payer needs the member's coverage"))
        return
    if len(references) == 1 or not payer:
        inputs.coverage = lookup(*split_reference(references[0]))
        if inputs.coverage is None:
            inputs.findings.append(_missing("Coverage", references[0]))
        return
    held = [c for c in (lookup(*split_reference(r)) for r in references) if c is not None]
    wanted = {name.strip().lower() for name in payer if name.strip()}
    mine = [c for c in held if wanted & _payor_names(c, lookup)]
    if len(mine) == 1:
        inputs.coverage = mine[0]
        return
    inputs.findings.append(Finding(
        "error", "ServiceRequest.insurance", "input",
        f"the ServiceRequest lists {len(references)} coverages and "
        f"{'none' if not mine else len(mine)} of those we hold names the payer "
        f"{payer[0]!r} as its payor (by name or payer_id); fix the order's insurance in the "
        "EHR or the payer's name and payer_id in [[payers]]"))


def _payor_names(coverage: Resource, lookup: Lookup) -> set[str]:
    """The names and identifier values of a Coverage's payors (lower case)."""
    found: set[str] = set()
    for payor in coverage.get("payor", []):
        if not isinstance(payor, dict):
            continue
        target = lookup(*split_reference(payor["reference"])) if payor.get("reference") else None
        for node in (payor, target or {}):
            for key in ("display", "name"):
                if isinstance(node.get(key), str):
                    found.add(node[key].strip().lower())
            idents = node.get("identifier")
            for ident in idents if isinstance(idents, list) else [idents]:
                if isinstance(ident, dict) and ident.get("value"):
                    found.add(str(ident["value"]).strip().lower())
    return found


def _performers(inputs: ClaimInputs, lookup: Lookup) -> None:
    for performer in inputs.service_request.get("performer", []):
        reference = performer.get("reference", "")
        kind, _ = split_reference(reference)
        if not reference:
            inputs.findings.append(Finding(
                "warning", "ServiceRequest.performer", "input",
                f"the performer {performer.get('display', '')!r} is a name without a reference; "
                "the Claim's careTeam needs the provider's resource: left out"))
        elif kind not in PERFORMER_TYPES:
            inputs.findings.append(Finding(
                "warning", "ServiceRequest.performer", "input",
                f"the performer {reference} is a {kind}; the Claim's careTeam takes a "
                "PractitionerRole, a Practitioner or an Organization: left out"))
        elif _hold(inputs, lookup, reference, "performer") and kind == "PractitionerRole":
            role = inputs.get(reference) or {}
            for key in ("practitioner", "organization"):
                target = (role.get(key) or {}).get("reference")
                if target:
                    _hold(inputs, lookup, target, f"the performer's {key}")


def _subscriber(inputs: ClaimInputs, lookup: Lookup) -> None:
    coverage = inputs.coverage or {}
    subscriber = (coverage.get("subscriber") or {}).get("reference", "")
    beneficiary = (coverage.get("beneficiary") or {}).get("reference", "")
    if subscriber and split_reference(subscriber) != split_reference(beneficiary):
        _hold(inputs, lookup, subscriber, "the Coverage's subscriber")


def _hold(inputs: ClaimInputs, lookup: Lookup, reference: str, what: str) -> bool:
    kind, rid = split_reference(reference)
    found = lookup(kind, rid)
    if found is None:
        inputs.findings.append(Finding(
            "warning", kind, "input", f"{what} {reference} is not among the EHR resources we "
            "hold (check the EHR subscription or reload the referral)"))
        return False
    inputs.related[f"{kind}/{rid}"] = found
    return True


def _missing(kind: str, reference: str) -> Finding:
    return Finding("error", kind, "input",
                   f"{reference} is not among the EHR resources we hold; the payer needs it "
                   "(check the EHR subscription or reload the referral)")
