"""The payer sandbox's eligibility and CRD answers (A FAKE PAYER, for the demo and tests):
CoverageEligibilityRequest/$submit answers a CoverageEligibilityResponse (active, the plan, the
referred-to provider in or out of network, authorization required unless the service's rule is
`no-auth`), and a CDS Hooks service for `order-sign` answers with a card and the order carrying
the Da Vinci CRD coverage-information extension."""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from typing import Any

from pas_client.sandbox.rules import SandboxRules

CRD_EXT = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
NETWORK = "http://terminology.hl7.org/CodeSystem/benefit-network"
SERVICE_ID = "order-sign-crd"


def eligibility_response(bundle: dict[str, Any], rules: SandboxRules) -> dict[str, Any]:
    entries = {e.get("fullUrl"): e.get("resource") for e in bundle.get("entry", [])}
    request = bundle["entry"][0]["resource"] if bundle.get("resourceType") == "Bundle" \
        else bundle
    items = []
    for item in request.get("item", []):
        code = ((item.get("productOrService") or {}).get("coding") or [{}])[0].get("code", "")
        provider = entries.get((item.get("provider") or {}).get("reference")) or {}
        ids = {i.get("value") for i in provider.get("identifier", [])} | {provider.get("id")}
        out = bool(ids & set(rules.out_of_network))
        items.append({"category": item.get("category"), "name": rules.plan,
                      "network": {"coding": [{"system": NETWORK,
                                              "code": "out" if out else "in"}]},
                      "authorizationRequired": rules.action_for(code) != "no-auth"})
    return {"resourceType": "CoverageEligibilityResponse", "id": uuid.uuid4().hex[:16],
            "status": "active", "purpose": request.get("purpose", ["validation"]),
            "patient": request.get("patient"), "created": _now(),
            "request": {"identifier": (request.get("identifier") or [{}])[0]},
            "outcome": "complete", "insurer": request.get("insurer"),
            "insurance": [{"coverage": (request.get("insurance") or [{}])[0].get("coverage"),
                           "inforce": rules.eligibility_active, "item": items}]}


def crd_discovery() -> dict[str, Any]:
    return {"services": [{
        "hook": "order-sign", "id": SERVICE_ID, "title": "Sandbox coverage requirements",
        "description": "PAYER SANDBOX (a fake payer): coverage requirements for orders",
        "prefetch": {"patient": "Patient/{{context.patientId}}",
                     "coverage": "Coverage?patient={{context.patientId}}&status=active"}}]}


def crd_answer(call: dict[str, Any], rules: SandboxRules) -> dict[str, Any]:
    coverage = ((call.get("prefetch") or {}).get("coverage") or {}).get("entry") or [{}]
    coverage_ref = f"Coverage/{(coverage[0].get('resource') or {}).get('id', 'unknown')}"
    actions, needed = [], []
    for entry in call["context"]["draftOrders"].get("entry", []):
        order = copy.deepcopy(entry["resource"])
        codes = [c.get("code", "") for c in (order.get("code") or {}).get("coding", [])]
        action = next((rules.by_code[c] for c in codes if c in rules.by_code), rules.default)
        pa_needed = rules.pa_needed or ("no-auth" if action == "no-auth" else "auth-needed")
        needed.append(pa_needed)
        parts: list[dict[str, Any]] = [
            {"url": "coverage", "valueReference": {"reference": coverage_ref}},
            {"url": "covered", "valueCode": "covered"},
            {"url": "pa-needed", "valueCode": pa_needed},
            {"url": "date", "valueDate": _now()[:10]},
            {"url": "coverage-assertion-id", "valueString": f"SBX-CRD-{uuid.uuid4().hex[:8]}"}]
        if pa_needed in ("conditional", "indeterminate"):
            parts.append({"url": "reason", "valueCodeableConcept": {
                "text": "the sandbox needs more information"}})
            if pa_needed == "conditional":
                parts.append({"url": "info-needed", "valueCode": "OTH"})
        order.setdefault("extension", []).append({"url": CRD_EXT, "extension": parts})
        actions.append({"type": "update", "description": "Coverage information",
                        "resource": order})
    return {"cards": [{"summary": f"Prior authorization: {', '.join(needed)} (payer sandbox)",
                       "indicator": "info", "source": {"label": "Payer sandbox (fake)"}}],
            "systemActions": actions}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
