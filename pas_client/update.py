"""Claim Update bundles (profile-claim-update) for changes and cancellation, and the
$inquire request bundle. Cancelling never uses Claim.status: it stays active; cancelled items
carry infoCancelled and certificationType 3, a whole cancel also sets it on the Claim."""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from typing import Any

from pas_client.bundle import BUNDLE_ID_SYSTEM, PAS, X12, concept, ext, profile

RELATED_PRIOR = "http://terminology.hl7.org/CodeSystem/ex-relatedclaimrelationship"
INFO_CHANGED = PAS + "extension-infoChanged"
INFO_CANCELLED = PAS + "modifierextension-infoCancelled"
CERTIFICATION = PAS + "extension-certificationType"


def _stamp(now: datetime | None) -> str:
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def build_update_bundle(prior: dict[str, Any], *, cancel_items: set[int] | None = None,
                        add_items: list[dict[str, Any]] | None = None, cancel_all: bool = False,
                        now: datetime | None = None) -> tuple[dict[str, Any], str, str]:
    """(bundle, bundle identifier, claim identifier) updating the Claim first in `prior`."""
    prior_entry = prior["entry"][0]
    prior_claim = prior_entry["resource"]
    claim = copy.deepcopy(prior_claim)
    claim_identifier = uuid.uuid4().hex[:20].upper()
    claim["id"] = claim_identifier.lower()
    claim["meta"] = profile("profile-claim-update")
    claim["identifier"] = [{**prior_claim["identifier"][0], "value": claim_identifier}]
    claim["created"] = _stamp(now)
    claim["status"] = "active"
    claim["related"] = [{"claim": {"reference": prior_entry["fullUrl"]},
                         "relationship": concept(RELATED_PRIOR, "prior")}]
    cancel = set(item["sequence"] for item in claim["item"]) if cancel_all \
        else (cancel_items or set())
    for item in claim["item"]:
        item["extension"] = [e for e in item.get("extension", []) if e["url"] != INFO_CHANGED]
        if item["sequence"] in cancel and not _cancelled(item):
            _cancel(item)
    next_sequence = max(item["sequence"] for item in claim["item"]) + 1
    for offset, added in enumerate(add_items or []):
        item = copy.deepcopy(added)
        item["sequence"] = next_sequence + offset
        item.setdefault("extension", []).append(ext("extension-infoChanged", valueCode="added"))
        claim["item"].append(item)
    if cancel_all:
        claim["extension"] = [e for e in claim.get("extension", []) if e["url"] != CERTIFICATION]
        claim["extension"].append(ext("extension-certificationType", valueCodeableConcept=concept(
            X12 + "1322", "3", "Cancel")))
    prior_copy = copy.deepcopy(prior_claim)  # spec-66: ITS prior Claim is not included
    bundle_identifier = str(uuid.uuid4())
    bundle: dict[str, Any] = {
        "resourceType": "Bundle", "meta": profile("profile-pas-request-bundle"),
        "identifier": {"system": BUNDLE_ID_SYSTEM, "value": bundle_identifier},
        "type": "collection", "timestamp": _stamp(now),
        "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": claim},
                  {"fullUrl": prior_entry["fullUrl"], "resource": prior_copy},
                  *copy.deepcopy(prior["entry"][1:])],
    }
    bundle["entry"] = _unique(bundle["entry"])
    return bundle, bundle_identifier, claim_identifier


def _unique(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    kept: list[dict[str, Any]] = []
    for entry in entries:
        if entry["fullUrl"] not in seen and not (entry["resource"]["resourceType"] == "Claim"
                                                 and len(kept) >= 2):
            kept.append(entry)
            seen.add(entry["fullUrl"])
    return kept


def _cancelled(item: dict[str, Any]) -> bool:
    return any(e["url"] == INFO_CANCELLED and e.get("valueBoolean")
               for e in item.get("modifierExtension", []))


def _cancel(item: dict[str, Any]) -> None:
    item.setdefault("modifierExtension", []).append(
        {"url": INFO_CANCELLED, "valueBoolean": True})
    for extension in item["extension"]:
        if extension["url"] == CERTIFICATION:
            extension["valueCodeableConcept"] = concept(X12 + "1322", "3", "Cancel")
    item["extension"].append(ext("extension-infoChanged", valueCode="changed"))


def build_inquiry_bundle(sent: dict[str, Any], auth_number: str = "",
                         now: datetime | None = None) -> dict[str, Any]:
    """An $inquire request (profile-claim-inquiry) for the request `sent`: same patient,
    payer, requester and items; its own identifier; the authorization number when known."""
    claim = copy.deepcopy(sent["entry"][0]["resource"])
    identifier = uuid.uuid4().hex[:20].upper()
    claim["id"] = identifier.lower()
    claim["meta"] = profile("profile-claim-inquiry")
    claim["identifier"] = [{**claim["identifier"][0], "value": identifier}]
    claim.pop("related", None)
    claim["extension"] = [e for e in claim.get("extension", []) if e["url"] != CERTIFICATION]
    if auth_number:
        claim["extension"].append(ext("extension-authorizationNumber", valueString=auth_number))
    for item in claim.get("item", []):
        item.pop("modifierExtension", None)
        item["extension"] = [e for e in item.get("extension", [])
                             if e["url"] not in (INFO_CHANGED, CERTIFICATION)
                             and not e["url"].endswith("serviceItemRequestType")]
    entries = [e for e in sent["entry"][1:] if e["resource"]["resourceType"] != "Claim"]
    return {"resourceType": "Bundle", "meta": profile("profile-pas-inquiry-request-bundle"),
            "identifier": {"system": BUNDLE_ID_SYSTEM, "value": str(uuid.uuid4())},
            "type": "collection", "timestamp": _stamp(now),
            "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": claim},
                      *copy.deepcopy(entries)]}
