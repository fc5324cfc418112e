"""Reading a payer's reply, whatever shape it comes in: the IG's response Bundle (ClaimResponse
first), a Bundle with the ClaimResponse elsewhere or nested in another Bundle, a bare
ClaimResponse, a Parameters wrapping Bundles ($inquire in 2.2.1), an OperationOutcome, or
something that is not FHIR JSON at all. Pure: the caller has stored the raw reply already."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pas_client.client import outcome_text
from pas_client.response import Decision, from_claim_response

DECISION, EMPTY, REJECTED, UNINTERPRETABLE = "decision", "empty", "rejected", "uninterpretable"
MAX_DEPTH = 4


@dataclass(frozen=True)
class Reading:
    #: decision (one or more ClaimResponses) | empty (a well-formed answer without any, as an
    #: $inquire may give) | rejected (4xx) | uninterpretable
    outcome: str
    decisions: tuple[Decision, ...] = ()
    problem: str = ""            # for people: why it cannot be used, or the payer's words
    notes: tuple[str, ...] = ()  # deviations from the IG we accepted


def read_reply(status: int, parsed: Any, parse_problem: str = "", *,
               operation: str = "submit") -> Reading:
    """What a reply to `operation` (submit, inquire, read) says."""
    if 400 <= status < 500:
        text = outcome_text(parsed) if isinstance(parsed, dict) else ""
        return Reading(REJECTED, problem=text or f"HTTP {status} without an OperationOutcome")
    if 300 <= status < 400:
        return Reading(UNINTERPRETABLE, problem=f"HTTP {status} is a redirect, which Refloop "
                       "does not follow (it could send patient data to another host): check "
                       "the payer's base_url")
    if not 200 <= status < 300:
        return Reading(UNINTERPRETABLE, problem=f"HTTP {status} is not an answer")
    if parse_problem or not isinstance(parsed, dict):
        return Reading(UNINTERPRETABLE, problem=parse_problem or "the reply is not a JSON object")
    kind = parsed.get("resourceType")
    if kind == "OperationOutcome":
        said = outcome_text(parsed) or "no issue text"
        if operation == "inquire" and _only_not_found(parsed):
            return Reading(EMPTY, problem=f"the payer found no matching request ({said})")
        return Reading(UNINTERPRETABLE, problem=f"the payer answered HTTP {status} with an "
                       f"OperationOutcome and no decision: {said}")
    if kind not in ("Bundle", "ClaimResponse", "Parameters"):
        return Reading(UNINTERPRETABLE, problem=f"expected a PAS response Bundle or a "
                       f"ClaimResponse, got {kind!r}")
    found = find_claim_responses(parsed)
    notes = _deviations(parsed, found, operation)
    if not found:
        if operation == "inquire":
            return Reading(EMPTY, problem="the payer returned no ClaimResponse", notes=notes)
        return Reading(UNINTERPRETABLE, problem=f"the {kind} holds no ClaimResponse",
                       notes=notes)
    patients = find_patients(parsed)
    return Reading(DECISION, tuple(from_claim_response(c, patients) for c in found),
                   notes=notes)


def find_claim_responses(resource: dict[str, Any], depth: int = 0) -> list[dict[str, Any]]:
    """Every ClaimResponse in `resource`: itself, its Bundle entries (nested Bundles too), or
    the resources of a Parameters."""
    return [found for _, found in _walk(resource, "ClaimResponse", "", depth)]


def find_patients(resource: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The Patients in a reply, by their Bundle entry's fullUrl and by `Patient/<id>`: what a
    ClaimResponse's `patient` reference can name."""
    patients: dict[str, dict[str, Any]] = {}
    for full_url, patient in _walk(resource, "Patient", "", 0):
        for key in (full_url, f"Patient/{patient.get('id', '')}" if patient.get("id") else ""):
            if key:
                patients.setdefault(key, patient)
    return patients


def _walk(resource: dict[str, Any], wanted: str, full_url: str,
          depth: int) -> list[tuple[str, dict[str, Any]]]:
    """(fullUrl or "", resource) of every `wanted` resource in `resource`."""
    kind = resource.get("resourceType")
    if kind == wanted:
        return [(full_url, resource)]
    if depth >= MAX_DEPTH:
        return []
    if kind == "Bundle":
        inner = [(str(e.get("fullUrl", "")), e.get("resource"))
                 for e in resource.get("entry") or [] if isinstance(e, dict)]
    elif kind == "Parameters":
        inner = [("", p.get("resource")) for p in resource.get("parameter") or []
                 if isinstance(p, dict)]
    else:
        return []
    found: list[tuple[str, dict[str, Any]]] = []
    for url, item in inner:
        if isinstance(item, dict):
            found += _walk(item, wanted, url, depth + 1)
    return found


def _deviations(parsed: dict[str, Any], found: list[dict[str, Any]],
                operation: str) -> tuple[str, ...]:
    kind = parsed["resourceType"]
    if operation != "submit" or not found:
        return ()
    if kind == "ClaimResponse":
        return ("a bare ClaimResponse, not the IG's response Bundle",)
    if kind == "Parameters":
        return ("a Parameters, not the IG's response Bundle",)
    entries = parsed.get("entry") or []
    first = entries[0].get("resource") if entries and isinstance(entries[0], dict) else None
    if first is not found[0]:
        return ("the ClaimResponse is not the Bundle's first entry (the IG puts it first)",)
    return ()


def _only_not_found(outcome: dict[str, Any]) -> bool:
    issues = [i for i in outcome.get("issue", []) if isinstance(i, dict)]
    return bool(issues) and all(i.get("code") == "not-found" for i in issues)
