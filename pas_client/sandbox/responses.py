"""PAS response Bundles and subscription notifications the sandbox sends."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from pas_client.bundle import CPT, PAS, X12, concept, ext, profile
from pas_client.update import INFO_CANCELLED

CODES = {"approve": ("A1", "Certified in total"), "pend": ("A4", "Pending"),
         "deny": ("A3", "Not Certified"), "modify": ("A6", "Modified"),
         "contact": ("CT", "Contact Payer"), "cancel": ("C", "Cancelled"),
         "no-auth": ("NA", "No Action Required")}
TOPIC = "http://hl7.org/fhir/us/davinci-pas/SubscriptionTopic/PASSubscriptionTopic"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def review_action(action: str, number: str) -> dict[str, Any]:
    code, display = CODES[action.split(":", 1)[0]]
    parts: list[dict[str, Any]] = [{"url": PAS + "extension-reviewActionCode",
                                    "valueCodeableConcept": concept(X12 + "306", code, display)}]
    if number and code in ("A1", "A6", "A2"):
        parts.insert(0, {"url": "number", "valueString": number})
    if code == "A3":
        parts.append({"url": "reasonCode", "valueCodeableConcept": concept(
            "https://codesystem.x12.org/external/886", "0U", "Additional information needed")})
    return {"url": PAS + "extension-reviewAction", "extension": parts}


def adjudication(action: str, number: str) -> list[dict[str, Any]]:
    return [{"extension": [review_action(action, number)], "category": concept(
        "http://terminology.hl7.org/CodeSystem/adjudication", "submitted")}]


def build_response_bundle(request: dict[str, Any], actions: dict[int, str],
                          number: str, version: str) -> dict[str, Any]:
    claim_entry = request["entry"][0]
    claim = claim_entry["resource"]
    items, add_items = [], []
    for item in claim.get("item", []):
        action = actions[item["sequence"]]
        items.append({"itemSequence": item["sequence"],
                      "adjudication": adjudication(action, number)})
        if action.startswith("modify:"):
            add_items.append({"itemSequence": [item["sequence"]],
                              "productOrService": concept(CPT, action.split(":", 1)[1]),
                              "adjudication": adjudication("approve", number)})
    claim_response: dict[str, Any] = {
        "resourceType": "ClaimResponse", "id": uuid.uuid4().hex,
        "meta": profile("profile-claimresponse"), "identifier": claim["identifier"][:1],
        "status": "active", "type": claim["type"], "use": "preauthorization",
        "patient": claim["patient"], "created": now(), "insurer": claim["insurer"],
        "requestor": claim["provider"],
        "request": {"reference": claim_entry["fullUrl"], "identifier": claim["identifier"][0]},
        "outcome": "queued" if version == "2.0.1" and "pend" in actions.values()
        else "complete",
        "item": items,
    }
    if add_items:
        claim_response["addItem"] = add_items
    referenced = {claim["patient"]["reference"], claim["insurer"]["reference"],
                  claim["provider"]["reference"]}
    echoed = [e for e in request["entry"][1:] if e["fullUrl"] in referenced]
    return {"resourceType": "Bundle", "meta": profile("profile-pas-response-bundle"),
            "identifier": {"system": "urn:refloop:sandbox:response", "value": uuid.uuid4().hex},
            "type": "collection", "timestamp": now(),
            "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": claim_response},
                      *echoed]}


def item_actions(claim: dict[str, Any], decide: Any) -> dict[int, str]:
    cancel_all = any(e["url"].endswith("certificationType") and
                     e["valueCodeableConcept"]["coding"][0]["code"] == "3"
                     for e in claim.get("extension", []))
    actions = {}
    for item in claim.get("item", []):
        cancelled = cancel_all or any(m["url"] == INFO_CANCELLED and m.get("valueBoolean")
                                      for m in item.get("modifierExtension", []))
        code = (item.get("productOrService", {}).get("coding") or [{}])[0].get("code", "")
        actions[item["sequence"]] = "cancel" if cancelled else decide(code)
    return actions


def shape_reply(response: dict[str, Any], shape: str) -> tuple[int, bytes]:
    """(status, body) of a $submit reply in one of the shapes payers use (rules.REPLY_SHAPES)."""
    claim_response = response["entry"][0]["resource"]
    if shape == "claim-response":
        return 200, json.dumps(claim_response).encode()
    if shape == "claim-response-not-first":
        return 200, json.dumps({**response, "entry": [*response["entry"][1:],
                                                      response["entry"][0]]}).encode()
    if shape == "parameters":
        return 200, json.dumps({"resourceType": "Parameters", "parameter": [
            {"name": "return", "resource": response}]}).encode()
    if shape == "operation-outcome":
        return 200, json.dumps(operation_outcome(
            "processing", "accepted for processing; the decision follows")).encode()
    if shape == "malformed":
        return 200, json.dumps(response).encode()[:-40]
    if shape == "foreign-items":
        moved = copy.deepcopy(response)
        for item in moved["entry"][0]["resource"].get("item", []):
            item["itemSequence"] += 10
        return 200, json.dumps(moved).encode()
    return 200, json.dumps(response).encode()


def build_notification(subscription: dict[str, Any], response: dict[str, Any],
                       event_number: int, shape: str) -> dict[str, Any]:
    response_url = f"urn:uuid:{uuid.uuid4()}"
    claim_response_entry = response["entry"][0]
    claim_response = claim_response_entry["resource"]
    focus = {"nested": response_url, "id-only": f"ClaimResponse/{claim_response['id']}"}.get(
        shape, claim_response_entry["fullUrl"])
    status = {"resourceType": "Parameters", "id": uuid.uuid4().hex, "parameter": [
        {"name": "subscription", "valueReference": {
            "reference": f"Subscription/{subscription['id']}"}},
        {"name": "topic", "valueCanonical": TOPIC},
        {"name": "status", "valueCode": "active"},
        {"name": "type", "valueCode": "event-notification"},
        {"name": "events-since-subscription-start", "valueString": str(event_number)},
        {"name": "notification-event", "part": [
            {"name": "event-number", "valueString": str(event_number)},
            {"name": "timestamp", "valueInstant": now()},
            {"name": "focus", "valueReference": {"reference": focus}}]}]}
    entries: list[dict[str, Any]] = [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": status}]
    if shape == "nested":
        entries.append({"fullUrl": response_url, "resource": response})
    elif shape != "id-only":
        entries.extend(response["entry"])
    return {"resourceType": "Bundle", "id": uuid.uuid4().hex, "type": "history",
            "timestamp": now(), "entry": entries}


def operation_outcome(code: str, text: str, expression: str = "") -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": "error", "code": code, "details": {"text": text}}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


__all__ = ["build_notification", "build_response_bundle", "ext", "item_actions",
           "operation_outcome", "shape_reply"]
