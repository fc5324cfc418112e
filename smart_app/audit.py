"""AuditEvents (FHIR R4, after IHE BALP) for every view of patient data, stored as local
resources. No PHI in text fields: references and ids only."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection

from referrals.store.resources import ResourceStore
from smart_app.sessions import Session

DCM = "http://dicom.nema.org/resources/ontology/DCM"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
#: AuditEvent.action of each interaction (search is an execute, as BALP's queries are)
ACTION_CODES = {"read": "R", "update": "U", "search": "E"}


def build_audit_event(session: Session, *, interaction: str, patient: str,
                      entities: list[str], query: str = "", client_id: str = "",
                      at: datetime | None = None,
                      patients: Sequence[str] = (), outcome: str = "0") -> dict[str, Any]:
    """A BALP-shaped AuditEvent: `interaction` is read, search or update; `patient` may be "";
    `patients`: every other patient whose data the view showed (a search's result rows);
    `outcome` "4" for a request refused (minor failure)."""
    moment = (at or datetime.now(UTC)).isoformat()
    entity: list[dict[str, Any]] = []
    for reference in dict.fromkeys(p for p in (patient, *patients) if p):
        entity.append({"what": {"reference": reference},
                       "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                       "role": {"system": ROLE, "code": "1", "display": "Patient"}})
    for reference in entities:
        entity.append({"what": {"reference": reference},
                       "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                       "role": {"system": ROLE, "code": "4", "display": "Domain Resource"}})
    if query:
        entity.append({"type": {"system": ENTITY_TYPE, "code": "2"},
                       "role": {"system": ROLE, "code": "24", "display": "Query"},
                       "query": _b64(query)})
    entity.append({"type": {"system": ENTITY_TYPE, "code": "4", "display": "Other"},
                   "detail": [{"type": "iss", "valueString": session.iss},
                              {"type": "session", "valueString": session.id[:8]}]})
    return {
        "resourceType": "AuditEvent", "id": str(uuid.uuid4()),
        "type": {"system": DCM, "code": "110110", "display": "Patient Record"},
        "subtype": [{"system": RESTFUL, "code": interaction}],
        "action": ACTION_CODES.get(interaction, "E"),
        "recorded": moment, "outcome": outcome,
        "agent": [
            {"type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
             "who": {"reference": session.context.user,
                     **({"display": session.context.user_display}
                        if session.context.user_display else {})},
             "requestor": True},
            {"type": {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]},
             "who": {"identifier": {"system": "urn:refloop:smart:client",
                                    "value": client_id or session.tenant}},
             "requestor": False},
        ],
        "source": {"observer": {"display": "Refloop SMART app"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/"
                             "security-source-type", "code": "4",
                             "display": "Application Server"}]},
        "entity": entity,
    }


def record(resources: ResourceStore, event: dict[str, Any],
           conn: Connection | None = None) -> None:
    resources.put(event, server="local", conn=conn)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
