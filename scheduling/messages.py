"""Messages to the patient: `outreach.message` work items (the outreach adapter sends them,
applying quiet hours, caps, consent and language). Payload as agreed between the adapters:
{"referral_id", "purpose", "params", "attachments"?, "expires_at"?, "reply_context"?}."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from referrals.store.work import WorkQueue

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
