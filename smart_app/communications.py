"""The patient outreach timeline of the referral page: the FHIR Communications about the
referral's Task (messages sent, attempts not done with their reason, the patient's replies),
read from the store like any other resource; the app needs nothing from the outreach adapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from referrals.store.schema import resources
from smart_app.runtime import SmartRuntime

LOCAL = "local"
MEDIUM = {"SMSWRIT": "SMS", "EMAILWRIT": "email", "DICTATE": "call", "PHONE": "phone"}


@dataclass(frozen=True)
class Entry:
    when: str
    direction: str  # sent | not sent | delivery unknown | reply
    medium: str
    purpose: str
    status: str
    why: str
    text: str


def timeline(rt: SmartRuntime, referral_id: str, limit: int = 200) -> list[Entry]:
    target = f"Task/{referral_id}"
    query = (sa.select(resources.c.body).where(
        resources.c.server == LOCAL, resources.c.resource_type == "Communication",
        resources.c.deleted.is_(False), sa.cast(resources.c.body, sa.Text).contains(target))
        .limit(limit))
    with rt.db.read() as c:
        bodies = [b for b in c.execute(query).scalars()
                  if any(a.get("reference") == target for a in b.get("about") or [])]
    entries = [_entry(b) for b in bodies]
    return sorted(entries, key=lambda e: e.when, reverse=True)


def _entry(body: dict[str, Any]) -> Entry:
    reply = bool(body.get("inResponseTo"))
    status = str(body.get("status", ""))
    direction = "reply" if reply else {"not-done": "not sent",
                                         "unknown": "delivery unknown"}.get(status, "sent")
    when = str(body.get("received") if reply else body.get("sent") or body.get("received")
               or (body.get("meta") or {}).get("lastUpdated") or "")
    codes = [c.get("code", "") for m in body.get("medium") or [] for c in m.get("coding") or []]
    reason = body.get("statusReason") or {}
    why = str(reason.get("text") or ", ".join(c.get("code", "") for c in
                                              reason.get("coding") or []))
    return Entry(when=when[:16].replace("T", " "), direction=direction,
                 medium=MEDIUM.get(codes[0], codes[0]) if codes else "",
                 purpose=", ".join(str(c.get("text", "")) for c in body.get("category") or []),
                 status=status, why=why,
                 text=" ".join(str(p.get("contentString", "")) for p in body.get("payload") or []
                               )[:300])
