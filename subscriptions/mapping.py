"""From an EHR ServiceRequest (and the resources it references) to referral fields."""

from __future__ import annotations

from typing import Any

from referrals.model import PAYER_MAX, PRIORITIES, SPECIALTY_MAX, Referral, new_referral_id
from subscriptions.notification import to_relative_reference

OPENING_STATUSES = frozenset({"active", "on-hold"})


def source_key(server: str, service_request_id: str) -> str:
    return f"fhir|{server}|ServiceRequest/{service_request_id}"


def to_referral_fields(service_request: dict[str, Any],
                       included: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The referral's fields from the ServiceRequest; `included` maps "Type/id" to resources."""
    priority = str(service_request.get("priority") or "routine")
    return {
        "patient": _ref(service_request.get("subject")),
        "requester": _ref(service_request.get("requester")),
        "performer": _ref((service_request.get("performer") or [None])[0]),
        "priority": priority if priority in PRIORITIES else "routine",
        # cut to the referral's columns, as the v2 bridge does (PostgreSQL refused a longer
        # one and the referral went to quarantine; SQLite kept it whole)
        "specialty": _text(service_request.get("performerType"))[:SPECIALTY_MAX],
        "reason_text": _reason(service_request),
        "payer": _payer(service_request, included)[:PAYER_MAX],
    }


def to_referral_draft(server: str, service_request: dict[str, Any],
                      included: dict[str, dict[str, Any]]) -> Referral:
    sr_id = str(service_request["id"])
    fields = to_referral_fields(service_request, included)
    identifiers = tuple((str(i.get("system") or ""), str(i.get("value")))
                        for i in service_request.get("identifier") or []
                        if isinstance(i, dict) and i.get("value"))
    return Referral(id=new_referral_id(), source_key=source_key(server, sr_id),
                    service_request=f"ServiceRequest/{sr_id}", identifiers=identifiers,
                    **fields)


def changed_fields(referral: Referral, fields: dict[str, Any]) -> dict[str, Any]:
    """Fields whose EHR value differs from the referral's (empty EHR values never erase)."""
    return {k: v for k, v in fields.items() if v and getattr(referral, k) != v}


def matches_criteria(service_request: dict[str, Any], params: list[tuple[str, str]]) -> bool:
    """Check the token parameters a server may not have applied (status, intent, priority,
    category); other parameters are the server's business."""
    for name, value in params:
        if name in ("status", "intent", "priority") and \
                str(service_request.get(name) or "") not in value.split(","):
            return False
        if name == "category" and not matches_category(service_request, value.split(",")):
            return False
    return True


def matches_category(service_request: dict[str, Any], tokens: list[str]) -> bool:
    """Does a `category` coding match one of the tokens ("system|code", "code", "|code",
    "system|")? No tokens: anything matches."""
    tokens = [t for t in tokens if t]
    if not tokens:
        return True
    codings = [c for concept in service_request.get("category") or []
               if isinstance(concept, dict)
               for c in concept.get("coding") or [] if isinstance(c, dict)]
    for token in tokens:
        system, bar, code = token.rpartition("|")
        for coding in codings:
            if code and str(coding.get("code") or "") != code:
                continue
            if bar and system and str(coding.get("system") or "") != system:
                continue
            if bar and not system and coding.get("system"):
                continue
            if code or system:
                return True
    return False


def _ref(value: Any) -> str:
    if isinstance(value, dict):
        return to_relative_reference(value.get("reference")) or ""
    return ""


def _text(concepts: Any) -> str:
    concept = concepts[0] if isinstance(concepts, list) and concepts else concepts
    if isinstance(concept, dict) and isinstance(concept.get("concept"), dict):
        concept = concept["concept"]  # R5 CodeableReference (ServiceRequest.code, .reason)
    if not isinstance(concept, dict):
        return ""
    if concept.get("text"):
        return str(concept["text"])
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and coding.get("display"):
            return str(coding["display"])
    return ""


def _reason(service_request: dict[str, Any]) -> str:
    what = _text(service_request.get("code"))
    why = _text(service_request.get("reasonCode") or service_request.get("reason"))  # R4 / R5
    if not why:
        why = " ".join(str(n.get("text")) for n in service_request.get("note") or []
                       if isinstance(n, dict) and n.get("text"))[:200]
    return f"{what}: {why}" if what and why else what or why


def _payer(service_request: dict[str, Any], included: dict[str, dict[str, Any]]) -> str:
    for insurance in service_request.get("insurance") or []:
        coverage = included.get(_ref(insurance))
        if not coverage:
            continue
        for payor in coverage.get("payor") or []:
            if isinstance(payor, dict) and payor.get("display"):
                return str(payor["display"])
            reference = _ref(payor)
            organization = included.get(reference) if reference else None
            if organization and organization.get("name"):
                return str(organization["name"])
    return ""
