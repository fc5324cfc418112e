"""Everything the referral page shows: the ServiceRequest, Patient, Coverage and requester, each
read from the server the referral came from (smart_app/reads.py), the event timeline, outreach
attempts, prior authorization (state and child Tasks), the appointment and the consult note."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from referrals.model import (
    LINK_APPOINTMENT,
    LINK_CONSULT_NOTE,
    Event,
    Link,
    Referral,
    source_server,
)
from referrals.store.schema import resources
from smart_app import reach
from smart_app.patient_label import display_name
from smart_app.reads import OriginReader, Read
from smart_app.runtime import SmartRuntime
from smart_app.sessions import Session

LOCAL = "local"


@dataclass(frozen=True)
class ReferralPage:
    referral: Referral
    events: list[Event]
    #: where the referral's references are read ("http://ehr/fhir", "hl7:SENDER", "demo"...)
    origin: str = ""
    service_request: dict[str, Any] | None = None
    patient: dict[str, Any] | None = None
    coverage: dict[str, Any] | None = None
    requester: dict[str, Any] | None = None
    #: what could not be read from the origin, with the reason (shown on the page)
    unreadable: list[Read] = field(default_factory=list)
    auth_tasks: list[dict[str, Any]] = field(default_factory=list)
    appointments: list[tuple[Link, dict[str, Any] | None]] = field(default_factory=list)
    notes: list[tuple[Link, dict[str, Any] | None]] = field(default_factory=list)
    #: what the adapters add (wiring `referral_details`): name -> (data, (headers, rows))
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def outreach(self) -> list[Event]:
        return [e for e in self.events if e.action == "record-outreach"]

    @property
    def patient_references(self) -> list[str]:
        found = [self.referral.service_request]
        if self.coverage:
            found.append(f"Coverage/{self.coverage['id']}")
        found += [link.reference for link, _ in self.appointments + self.notes]
        return found

    def problem(self, reference: str) -> str:
        """Why `reference` could not be read ("" when it was, or was not asked for)."""
        return next((r.problem for r in self.unreadable if r.reference == reference), "")

    @property
    def requester_name(self) -> str:
        """The requester as the ServiceRequest names it, else from its resource."""
        display = str(((self.service_request or {}).get("requester") or {}).get("display") or "")
        return display or display_name(self.requester)


def load_page(rt: SmartRuntime, referral_id: str, session: Session) -> ReferralPage:
    """The referral and its resources, each read from the server the referral came from."""
    referral = reach.checked(rt, session, referral_id)
    reader = origin_reader(rt, referral, session)
    request = reader.read(referral.service_request)
    sr = request.resource or {}
    coverage_ref = next((i.get("reference", "") for i in sr.get("insurance") or []
                         if str(i.get("reference", "")).startswith("Coverage/")), "")
    requester_ref = str((sr.get("requester") or {}).get("reference") or referral.requester or "")
    wanted = [request, reader.read(referral.patient)]
    if coverage_ref:
        wanted.append(reader.read(coverage_ref))
    if requester_ref and not (sr.get("requester") or {}).get("display"):
        wanted.append(reader.read(requester_ref))
    found = {r.reference: r.resource for r in wanted}
    return ReferralPage(
        referral=referral, events=rt.store.events(referral.id), origin=reader.origin,
        service_request=request.resource, patient=found.get(referral.patient),
        coverage=found.get(coverage_ref) if coverage_ref else None,
        requester=found.get(requester_ref) if requester_ref else None,
        unreadable=[r for r in wanted if not r.ok],
        auth_tasks=_auth_tasks(rt, referral.id),
        appointments=[(link, _output(rt, reader, link.reference))
                      for link in referral.outputs if link.is_a(LINK_APPOINTMENT)],
        notes=[(link, _output(rt, reader, link.reference))
               for link in referral.outputs if link.is_a(LINK_CONSULT_NOTE)],
        details=rt.details(referral.id),
    )


def origin_reader(rt: SmartRuntime, referral: Referral, session: Session) -> OriginReader:
    """A reader for the server `referral` came from: stored copies, then live reads (the
    launch's token at the launch's server, Refloop's own client elsewhere)."""
    iss = session.iss.rstrip("/")

    def launch_read(reference: str) -> dict[str, Any]:
        token = str(rt.sessions.tokens(session).get("access_token") or "")
        return rt.launcher.http.get_json(f"{iss}/{reference}", bearer=token,
                                         accept="application/fhir+json")

    return OriginReader(rt.resources, source_server(referral.source_key), iss=session.iss,
                        launch_read=launch_read, remote=rt.read_remote)


def _output(rt: SmartRuntime, reader: OriginReader, reference: str) -> dict[str, Any] | None:
    """An appointment or consult note: Refloop's own (local) first, else the origin's copy."""
    if reference.count("/") == 1:
        rtype, rid = reference.split("/")
        found = rt.resources.try_get(rtype, rid, server=LOCAL)
        if found is not None:
            return found
    return reader.read(reference).resource


def _auth_tasks(rt: SmartRuntime, referral_id: str) -> list[dict[str, Any]]:
    """Prior-authorization Tasks the PAS adapter stored locally with partOf Task/<referral>."""
    target = f"Task/{referral_id}"
    query = sa.select(resources.c.body).where(
        resources.c.server == LOCAL, resources.c.resource_type == "Task",
        resources.c.deleted.is_(False),
        sa.cast(resources.c.body, sa.Text).contains(target))
    with rt.db.read() as c:
        bodies = list(c.execute(query).scalars())
    return [b for b in bodies
            if any(p.get("reference") == target for p in b.get("partOf") or [])]


def coding_display(concept: dict[str, Any] | None) -> str:
    if not concept:
        return ""
    if concept.get("text"):
        return str(concept["text"])
    return ", ".join(c.get("display") or c.get("code", "") for c in concept.get("coding", []))


def reasons(request: dict[str, Any] | None) -> str:
    if not request:
        return ""
    return "; ".join(coding_display(c) for c in request.get("reasonCode", []))


def coverage_text(coverage: dict[str, Any], payer_name: str = "") -> str:
    """Payer (member id, subscriber relationship, group, status) of a Coverage; the payer's
    name from the Coverage, else `payer_name` (the referral's)."""
    payer = next((str(p.get("display", "")) for p in coverage.get("payor") or []), "") or \
        payer_name
    relation = next((str(c.get("code", "")) for c in (coverage.get("relationship") or {})
                     .get("coding", [])), "")
    group = next((str(c.get("value", "")) for c in coverage.get("class") or []), "")
    parts = [f"member {coverage.get('subscriberId') or '-'}",
             f"subscriber {relation}" if relation else "",
             f"group {group}" if group else "", str(coverage.get("status", ""))]
    return f"{payer or 'payer unknown'} ({', '.join(p for p in parts if p)})"


def auth_outcome(task: dict[str, Any]) -> dict[str, str]:
    """Status, decision and reasons of a prior-authorization Task, for display."""
    reasons_text = coding_display(task.get("statusReason"))
    outputs = [coding_display(o.get("valueCodeableConcept")) or str(o.get("valueString", ""))
               for o in task.get("output") or []]
    return {"id": str(task.get("id", "")), "status": str(task.get("status", "")),
            "decision": coding_display(task.get("businessStatus")),
            "reasons": "; ".join(r for r in [reasons_text, *outputs] if r)}
