"""Eligibility before authorization: the FHIR R4 CoverageEligibilityRequest we POST to the
payer's `CoverageEligibilityRequest/$submit` (a Bundle: the request first, then the patient,
coverage, payer, our organisation and the provider the patient is referred to), and what we read
from the CoverageEligibilityResponse (bare, in a Bundle, or in a Parameters): coverage active,
the plan, whether the referred-to provider is in network, whether authorization is required.
Pure: the HTTP exchange is the client's. US payers mostly answer eligibility in X12 270/271;
this is for payers that offer it in FHIR."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

Resource = dict[str, Any]
X12 = "https://codesystem.x12.org/005010/"
PURPOSES = ["validation", "benefits", "auth-requirements"]
MAX_DEPTH = 4


def build_request(*, patient: Resource, coverage: Resource, insurer: Resource,
                  requestor: Resource, provider: Resource | None, product: Resource,
                  category: str, diagnoses: list[Resource], serviced: Resource | None,
                  expedited: bool, now: datetime, full_url: Any) -> Resource:
    """The CoverageEligibilityRequest; `full_url(resource)` gives each entry's reference."""
    item: Resource = {"category": {"coding": [{"system": X12 + "1365", "code": category}]},
                      "productOrService": product}
    if provider is not None:
        item["provider"] = {"reference": full_url(provider)}
    if diagnoses:
        item["diagnosis"] = [{"diagnosisCodeableConcept": d} for d in diagnoses]
    request: Resource = {
        "resourceType": "CoverageEligibilityRequest", "id": uuid.uuid4().hex[:20],
        "identifier": [{"system": "urn:refloop:eligibility", "value": str(uuid.uuid4())}],
        "status": "active",
        "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                           "processpriority",
                                 "code": "stat" if expedited else "normal"}]},
        "purpose": list(PURPOSES), "patient": {"reference": full_url(patient)},
        "created": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "provider": {"reference": full_url(requestor)},
        "insurer": {"reference": full_url(insurer)},
        "insurance": [{"focal": True, "coverage": {"reference": full_url(coverage)}}],
        "item": [item]}
    if serviced:
        request.update(serviced)
    return request


def find_responses(resource: Any, depth: int = 0) -> list[Resource]:
    """Every CoverageEligibilityResponse in a reply: bare, in a Bundle, in a Parameters."""
    if not isinstance(resource, dict):
        return []
    kind = resource.get("resourceType")
    if kind == "CoverageEligibilityResponse":
        return [resource]
    if depth >= MAX_DEPTH or kind not in ("Bundle", "Parameters"):
        return []
    inner = [e.get("resource") for e in resource.get("entry") or [] if isinstance(e, dict)] \
        if kind == "Bundle" else \
        [p.get("resource") for p in resource.get("parameter") or [] if isinstance(p, dict)]
    return [r for i in inner for r in find_responses(i, depth + 1)]


def read_response(response: Resource, reply: Any) -> dict[str, Any]:
    """What the payer said, as stored and shown: active, plan, in network, authorization
    required (None when the payer did not say), outcome, disposition, errors."""
    insurance = [i for i in response.get("insurance") or [] if isinstance(i, dict)]
    items = [item for i in insurance for item in i.get("item") or [] if isinstance(item, dict)]
    inforce = [i["inforce"] for i in insurance if isinstance(i.get("inforce"), bool)]
    networks = [_code(item.get("network")) for item in items if item.get("network")]
    required = [item["authorizationRequired"] for item in items
                if isinstance(item.get("authorizationRequired"), bool)]
    errors = [_code(e.get("code")) or "error" for e in response.get("error") or []
              if isinstance(e, dict)]
    return {
        "outcome": str(response.get("outcome", "")),
        "disposition": str(response.get("disposition", "")),
        "active": any(inforce) if inforce else None,
        "plan": _plan(reply, items),
        "in_network": (networks[0] == "in") if networks and networks[0] in ("in", "out")
        else None,
        "auth_required": any(required) if required else None,
        "benefit_period": next((i["benefitPeriod"] for i in insurance
                                if isinstance(i.get("benefitPeriod"), dict)), None),
        "errors": errors,
    }


def summary(answer: dict[str, Any]) -> str:
    """One line for people."""
    def said(value: Any, yes: str, no: str) -> str:
        return "unknown" if value is None else (yes if value else no)

    parts = [f"coverage {said(answer.get('active'), 'active', 'not active')}"]
    if answer.get("plan"):
        parts.append(f"plan {answer['plan']}")
    parts.append(said(answer.get("in_network"), "in network", "out of network"))
    parts.append("authorization " + said(answer.get("auth_required"), "required",
                                         "not required"))
    if answer.get("errors"):
        parts.append("errors " + ", ".join(answer["errors"]))
    return ", ".join(parts)


def _plan(reply: Any, items: list[Resource]) -> str:
    for resource in _resources(reply):
        if resource.get("resourceType") == "Coverage":
            for cls in resource.get("class") or []:
                if _code(cls.get("type")) == "plan":
                    return str(cls.get("name") or cls.get("value") or "")
    return next((str(item["name"]) for item in items if item.get("name")), "")


def _resources(reply: Any) -> list[Resource]:
    if not isinstance(reply, dict) or reply.get("resourceType") != "Bundle":
        return []
    return [e["resource"] for e in reply.get("entry") or []
            if isinstance(e, dict) and isinstance(e.get("resource"), dict)]


def _code(concept: Any) -> str:
    for coding in (concept or {}).get("coding", []) if isinstance(concept, dict) else []:
        if coding.get("code"):
            return str(coding["code"])
    return ""
