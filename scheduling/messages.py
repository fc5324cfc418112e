"""Messages to the patient: `outreach.message` work items (the outreach adapter sends them,
applying quiet hours, caps, consent and language). Payload as agreed between the adapters:
{"referral_id", "purpose", "params", "attachments"?, "expires_at"?, "reply_context"?}."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from referrals.store.schema import work_items
from referrals.store.work import PENDING, WorkQueue

KIND = "outreach.message"
#: replies to our messages come back with this prefix in reply_context
CONTEXT_PREFIX = "scheduling:"


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    content: bytes

    def to_payload(self) -> dict[str, str]:
        return {"filename": self.filename, "content_type": self.content_type,
                "content_b64": base64.b64encode(self.content).decode("ascii")}


def message_key(referral_id: str, purpose: str, n: str) -> str:
    return f"{KIND}:{referral_id}:{purpose}:{n}"


def enqueue_message(work: WorkQueue, conn: Connection, referral_id: str, purpose: str,
                    params: dict[str, str], *, n: str,
                    attachments: list[Attachment] | None = None,
                    expires_at: datetime | None = None, reply_context: str = "") -> int | None:
    """Ask outreach to send one message; the key makes a retry harmless."""
    payload: dict[str, Any] = {"referral_id": referral_id, "purpose": purpose,
                               "params": {k: str(v) for k, v in params.items()}}
    if attachments:
        payload["attachments"] = [a.to_payload() for a in attachments]
    if expires_at is not None:
        payload["expires_at"] = expires_at.isoformat()
    if reply_context:
        payload["reply_context"] = reply_context
    return work.enqueue(KIND, payload, key=message_key(referral_id, purpose, n), conn=conn)


def expire_messages(conn: Connection, referral_id: str, reply_context: str,
                    now: datetime) -> int:
    """Messages about one appointment that have not gone out yet (deferred by quiet hours or
    the daily cap) expire now: the appointment was replaced or cancelled, so the time they
    name is no longer the patient's. Outreach skips them with the `expired` rule when it runs
    them (at once), and records why. An item a worker holds right now is left to it."""
    rows = conn.execute(sa.select(work_items.c.id, work_items.c.payload).where(
        work_items.c.kind == KIND, work_items.c.status == PENDING,
        work_items.c.idempotency_key.like(f"{KIND}:{referral_id}:%"),
        sa.or_(work_items.c.lease_expires.is_(None), work_items.c.lease_expires < now),
    )).all()
    expired = 0
    for item_id, payload in rows:
        if not isinstance(payload, dict) or payload.get("reply_context") != reply_context:
            continue
        conn.execute(work_items.update().where(work_items.c.id == item_id).values(
            payload={**payload, "expires_at": now.isoformat()}, run_at=now))
        expired += 1
    return expired
