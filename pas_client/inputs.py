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


@dataclass
class ClaimInputs:
    referral_id: str
    priority: str
    service_request: Resource
    patient: Resource
    coverage: Resource | None = None
    practitioner: Resource | None = None
    findings: list[Finding] = field(default_factory=list)


def server_of(source_key: str) -> str:
    """Where the referral's EHR resources are stored: fhir|<base>|... -> <base>,
    hl7|<sender>|... -> hl7:<sender>, demo|... -> demo (referrals.model.source_server)."""
    return source_server(source_key)


def split_reference(reference: str) -> tuple[str, str]:
    parts = reference.rstrip("/").split("/")
    return (parts[-2], parts[-1]) if len(parts) >= 2 else ("", reference)


def gather_inputs(referral_id: str, priority: str, service_request_ref: str, patient_ref: str,
                  lookup: Lookup) -> ClaimInputs | list[Finding]:
    """The resources for the Claim, or findings saying what is missing."""
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
    for ref in service_request.get("insurance", []):
        if ref.get("reference"):
            inputs.coverage = lookup(*split_reference(ref["reference"]))
            if inputs.coverage is None:
                inputs.findings.append(_missing("Coverage", ref["reference"]))
            break
    else:
        inputs.findings.append(Finding(
            "error", "ServiceRequest.insurance", "input",
            "the ServiceRequest names no Coverage; the payer needs the member's coverage"))
    requester = (service_request.get("requester") or {}).get("reference", "")
    if requester.startswith("Practitioner/"):
        inputs.practitioner = lookup(*split_reference(requester))
    return inputs


def _missing(kind: str, reference: str) -> Finding:
    return Finding("error", kind, "input",
                   f"{reference} is not among the EHR resources we hold; the payer needs it "
                   "(check the EHR subscription or reload the referral)")
