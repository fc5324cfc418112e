"""AuditEvents (FHIR R4, after IHE BALP PatientRead / PatientQuery) for every read of patient
data through the FHIR facade, kept as local resources. References and ids only: no names, no
free text, never the token."""

from __future__ import annotations

import base64
import threading
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
IDLE_SECONDS = 5.0


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


class AuditLog:
    """Writes AuditEvents with group commit: a request hands its event over and waits until the
    transaction holding it has committed, so no data leaves before its audit record is durable,
    while concurrent requests share one commit (one disk flush) instead of one each."""

    def __init__(self, resources: ResourceStore, *, max_batch: int = 256,
                 wait_seconds: float = 30.0) -> None:
        self.resources = resources
        self.max_batch = max_batch
        self.wait_seconds = wait_seconds
        self._queue: list[_Pending] = []
        self._ready = threading.Condition()
        self._writer: threading.Thread | None = None

    def record(self, event: dict[str, Any]) -> None:
        """Store `event`; returns once it is committed (raises when the write failed)."""
        pending = _Pending(event)
        with self._ready:
            self._queue.append(pending)
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._write_forever,
                                                name="audit-writer", daemon=True)
                self._writer.start()
            self._ready.notify()
        if not pending.done.wait(self.wait_seconds):
            raise TimeoutError("the AuditEvent was not written in time")
        if pending.error is not None:
            raise pending.error

    def _write_forever(self) -> None:
        """Write what is queued, batch after batch; end after a few idle seconds (the next
        record starts a writer again)."""
        while True:
            with self._ready:
                if not self._queue:
                    self._ready.wait(IDLE_SECONDS)
                if not self._queue:
                    self._writer = None
                    return
                batch = self._queue[:self.max_batch]
                del self._queue[:self.max_batch]
            try:
                with self.resources.db.write() as conn:
                    for pending in batch:
                        self.resources.put(pending.event, server="local", conn=conn)
            except Exception as exc:  # each waiting request answers with its own error
                for pending in batch:
                    pending.error = exc
            for pending in batch:
                pending.done.set()


class _Pending:
    def __init__(self, event: dict[str, Any]) -> None:
        self.event = event
        self.done = threading.Event()
        self.error: Exception | None = None


def _is_reference(value: str) -> bool:
    head, _, tail = value.rpartition("/")
    return bool(tail) and head.split("/")[-1][:1].isupper()
