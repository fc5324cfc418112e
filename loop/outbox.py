"""What the loop asks other adapters to send, as work items of their kinds (adapters never import
each other): mail to a provider's office through outreach (`outreach.provider-email`) and v2
messages to a partner through the bridge (`hl7.partner-message`). Their outcomes come back as
our own kinds (`loop.mail-result`, `loop.v2-ack`) with the context we gave."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from referrals.store.work import WorkQueue

MAIL_KIND = "outreach.provider-email"
V2_KIND = "hl7.partner-message"
MAIL_RESULT = "loop.mail-result"
V2_ACK = "loop.v2-ack"


def ask_mail(work: WorkQueue, conn: Connection, *, key: str, to: str, subject: str,
             text: str, html: str, purpose: str, referral_id: str,
             context: dict[str, Any]) -> None:
    work.enqueue(MAIL_KIND, {
        "to": to, "subject": subject, "text": text, "html": html, "purpose": purpose,
        "referral_id": referral_id, "on_result": MAIL_RESULT, "context": context},
        key=key, conn=conn)


def ask_v2(work: WorkQueue, conn: Connection, *, key: str, partner: str, message: str,
           referral_id: str, context: dict[str, Any], status: str = "", text: str = "",
           document: dict[str, Any] | None = None, max_attempts: int = 8) -> None:
    payload: dict[str, Any] = {"partner": partner, "message": message,
                               "referral_id": referral_id, "on_ack": V2_ACK,
                               "context": context}
    if status:
        payload["status"] = status
    if text:
        payload["text"] = text
    if document is not None:
        payload["document"] = document
    work.enqueue(V2_KIND, payload, key=key, max_attempts=max_attempts, conn=conn)
