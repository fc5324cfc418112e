"""Everything the referral page shows, read from the core store: the ServiceRequest, Patient and
Coverage (held under the EHR's base, or "demo"), the event timeline, outreach attempts, prior
authorization (state and child Tasks), the appointment and the consult note."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from referrals.model import Event, Link, Referral, source_server
from referrals.store.schema import resources
from smart_app.runtime import SmartRuntime

LOCAL = "local"


@dataclass(frozen=True)
class ReferralPage:
    referral: Referral
    events: list[Event]
    service_request: dict[str, Any] | None = None
    patient: dict[str, Any] | None = None
    coverage: dict[str, Any] | None = None
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


def load_page(rt: SmartRuntime, referral_id: str, iss: str) -> ReferralPage:
    referral = rt.store.get(referral_id)
    servers = [*_servers(iss), source_server(referral.source_key)]
    request = _find(rt, referral.service_request, servers)
    coverage_ref = next((i.get("reference", "") for i in (request or {}).get("insurance", [])
                         if i.get("reference", "").startswith("Coverage/")), "")
    return ReferralPage(
        referral=referral, events=rt.store.events(referral.id), service_request=request,
        patient=_find(rt, referral.patient, servers),
        coverage=_find(rt, coverage_ref, servers) if coverage_ref else None,
        auth_tasks=_auth_tasks(rt, referral.id),
        appointments=[(link, _find(rt, link.reference, [LOCAL, *servers]))
                      for link in referral.outputs if link.is_a("appointment")],
        notes=[(link, _find(rt, link.reference, [LOCAL, *servers]))
               for link in referral.outputs if link.type == "consult-note"],
        details=rt.details(referral.id),
    )


def _servers(iss: str) -> list[str]:
    bare = iss.rstrip("/")
    return [bare, bare + "/", "demo", LOCAL]


def _find(rt: SmartRuntime, reference: str, servers: list[str]) -> dict[str, Any] | None:
    if reference.count("/") != 1:
        return None
    rtype, rid = reference.split("/")
    for server in servers:
        found = rt.resources.try_get(rtype, rid, server=server)
        if found is not None:
            return found
    return None


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


def human_name(resource: dict[str, Any] | None) -> str:
    for name in (resource or {}).get("name") or []:
        parts = [*name.get("given", []), name.get("family", "")]
        text = name.get("text") or " ".join(p for p in parts if p)
        if text:
            return str(text)
    return ""


def auth_outcome(task: dict[str, Any]) -> dict[str, str]:
    """Status, decision and reasons of a prior-authorization Task, for display."""
    reasons_text = coding_display(task.get("statusReason"))
    outputs = [coding_display(o.get("valueCodeableConcept")) or str(o.get("valueString", ""))
               for o in task.get("output") or []]
    return {"id": str(task.get("id", "")), "status": str(task.get("status", "")),
            "decision": coding_display(task.get("businessStatus")),
            "reasons": "; ".join(r for r in [reasons_text, *outputs] if r)}
