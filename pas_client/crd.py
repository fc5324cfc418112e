"""Da Vinci CRD as a CDS Hooks client: discover the payer's services, call `order-sign` (or the
configured hook) with the draft order and the prefetch the service asks for, and read what comes
back: the `coverage-information` extension on the orders of `systemActions` (and of card
suggestions, where older services put them) and the cards' summaries. Pure: the HTTP exchange is
the client's."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

CRD_EXT = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"
NAMESPACE = uuid.UUID("4e0c3a52-96f1-4a36-9f43-7d1c8a9c2b61")
TOKEN = re.compile(r"\{\{\s*([^}]+?)\s*\}\}")
#: resources we can hand over by id in a prefetch
READABLE = frozenset({"Patient", "Practitioner", "PractitionerRole", "Organization",
                      "Location", "Encounter", "Coverage", "ServiceRequest"})

Resource = dict[str, Any]


class CrdError(ValueError):
    """The CRD service's answer cannot be read (the message says why)."""


@dataclass(frozen=True)
class Service:
    id: str
    hook: str
    prefetch: dict[str, str] = field(default_factory=dict)
    title: str = ""


@dataclass(frozen=True)
class CrdAnswer:
    coverage_information: list[Resource]
    cards: list[dict[str, str]]


def choose_service(discovery: Any, hook: str) -> Service:
    """The first service of the discovery document that answers `hook`."""
    services = discovery.get("services") if isinstance(discovery, dict) else None
    if not isinstance(services, list):
        raise CrdError("the discovery document has no services list")
    for service in services:
        if isinstance(service, dict) and service.get("hook") == hook and service.get("id"):
            prefetch = service.get("prefetch")
            templates = {str(k): str(v) for k, v in prefetch.items()} \
                if isinstance(prefetch, dict) else {}
            return Service(str(service["id"]), hook, templates, str(service.get("title", "")))
    raise CrdError(f"the payer offers no CDS service for the {hook} hook")


def build_hook_request(service: Service, *, user: str, patient: Resource, order: Resource,
                       held: dict[str, Resource], coverage: Resource | None) -> Resource:
    """The CDS Hooks call: context (userId, patientId, draftOrders) and every prefetch key we
    can satisfy from the resources we hold (a key we cannot satisfy is left out, as CDS Hooks
    says; the service may then answer 412)."""
    context = {"userId": user, "patientId": patient["id"],
               "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [
                   {"fullUrl": f"urn:uuid:{uuid.uuid5(NAMESPACE, 'order/' + order['id'])}",
                    "resource": order}]}}
    request: Resource = {"hook": service.hook, "hookInstance": str(uuid.uuid4()),
                         "context": context}
    prefetch = {}
    for key, template in service.prefetch.items():
        found = resolve(fill(template, context), held, coverage)
        if found is not None:
            prefetch[key] = found
    if prefetch:
        request["prefetch"] = prefetch
    return request


def fill(template: str, context: Resource) -> str:
    def value(match: re.Match[str]) -> str:
        token = match.group(1)
        if token.startswith("context."):
            found = context.get(token.split(".", 1)[1])
            return str(found) if isinstance(found, str) else ""
        if token in ("userPractitionerId", "userPractitionerRoleId"):
            kind, _, rid = str(context.get("userId", "")).partition("/")
            wanted = "Practitioner" if token == "userPractitionerId" else "PractitionerRole"
            return rid if kind == wanted else ""
        return ""
    return TOKEN.sub(value, template)


def resolve(query: str, held: dict[str, Resource], coverage: Resource | None
            ) -> Resource | None:
    """A prefetch query answered from what we hold: `Type/id` reads and the searches a CRD
    service asks for (Coverage of the patient, _id lists); None when we cannot."""
    path, _, params = query.partition("?")
    parts = [p for p in path.split("/") if p]
    if not params and len(parts) == 2 and parts[0] in READABLE:
        return held.get(f"{parts[0]}/{parts[1]}")
    if len(parts) != 1:
        return None
    kind, args = parts[0], parse_qs(params)
    if kind == "Coverage":
        found = [coverage] if coverage is not None else []
    elif "_id" in args and kind in READABLE:
        ids = {i for value in args["_id"] for i in value.split(",")}
        found = [r for key, r in held.items() if key.split("/")[0] == kind
                 and key.split("/")[1] in ids]
    else:
        return None
    return {"resourceType": "Bundle", "type": "searchset", "total": len(found),
            "entry": [{"resource": r} for r in found]}


def read_answer(answer: Any) -> CrdAnswer:
    if not isinstance(answer, dict) or not isinstance(answer.get("cards"), list):
        raise CrdError("a CDS Hooks answer must be a JSON object with a cards list")
    resources = [a.get("resource") for a in answer.get("systemActions") or []
                 if isinstance(a, dict) and a.get("type") in ("update", "create")]
    cards = []
    for card in answer["cards"]:
        if not isinstance(card, dict):
            continue
        cards.append({"summary": str(card.get("summary", "")),
                      "indicator": str(card.get("indicator", "")),
                      "source": str((card.get("source") or {}).get("label", ""))})
        for suggestion in card.get("suggestions") or []:
            resources += [a.get("resource") for a in suggestion.get("actions") or []
                          if isinstance(a, dict)]
    information = [e for r in resources if isinstance(r, dict)
                   for e in r.get("extension") or [] if e.get("url") == CRD_EXT]
    return CrdAnswer(information, cards)
