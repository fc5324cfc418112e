"""AuditEvents (FHIR R4, after IHE BALP PatientRead / PatientQuery) for every read of patient
data through the FHIR facade, kept as local resources. References and ids only: no names, no
free text, never the token."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from referrals.store.resources import ResourceStore

DCM = "http://dicom.nema.org/resources/ontology/DCM"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
CLIENT_SYSTEM = "urn:refloop:client"
SUCCESS, REFUSED = "0", "4"


class Caller(Protocol):
    """Who read: the authenticated grant (client, user, issuer, tenant)."""

    client_id: str
    issuer: str
    tenant: str | None
    user: str


def build_audit_event(caller: Caller, *, interaction: str, patients: Sequence[str],
                      entities: Sequence[str], query: str = "", outcome: str = SUCCESS,
                      at: datetime | None = None) -> dict[str, Any]:
    entity: list[dict[str, Any]] = [
        {"what": {"reference": p}, "type": {"system": ENTITY_TYPE, "code": "1"},
         "role": {"system": ROLE, "code": "1", "display": "Patient"}}
        for p in dict.fromkeys(p for p in patients if p)]
    entity += [{"what": {"reference": r}, "type": {"system": ENTITY_TYPE, "code": "2"},
                "role": {"system": ROLE, "code": "4", "display": "Domain Resource"}}
               for r in entities]
    if query:
        entity.append({"type": {"system": ENTITY_TYPE, "code": "2"},
                       "role": {"system": ROLE, "code": "24", "display": "Query"},
                       "query": base64.b64encode(query.encode()).decode()})
    agents: list[dict[str, Any]] = [{
        "type": {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]},
        "who": {"identifier": {"system": caller.issuer if caller.issuer != "refloop"
                               else CLIENT_SYSTEM, "value": caller.client_id}},
        "requestor": not caller.user}]
    if caller.user:
        who = {"reference": caller.user} if _is_reference(caller.user) else \
            {"identifier": {"system": caller.issuer, "value": caller.user}}
        agents.append({"type": {"coding": [{"system": DCM, "code": "110153",
                                            "display": "Source Role ID"}]},
                       "who": who, "requestor": True})
    return {
        "resourceType": "AuditEvent", "id": str(uuid.uuid4()),
        "type": {"system": DCM, "code": "110110", "display": "Patient Record"},
        "subtype": [{"system": RESTFUL, "code": interaction}],
        "action": "R" if interaction == "read" else "E",
        "recorded": (at or datetime.now(UTC)).isoformat(), "outcome": outcome,
        "agent": agents,
        "source": {"observer": {"display": "Refloop FHIR facade"},
                   "type": [{"system": SOURCE_TYPE, "code": "4",
                             "display": "Application Server"}]},
        "entity": entity,
    }


def record(resources: ResourceStore, event: dict[str, Any]) -> None:
    resources.put(event, server="local")


def _is_reference(value: str) -> bool:
    head, _, tail = value.rpartition("/")
    return bool(tail) and head.split("/")[-1][:1].isupper()
