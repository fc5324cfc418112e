"""Mail to a provider's office (a specialist asked for a consult note, a referring practice's
daily digest), asked for by other adapters through the `outreach.provider-email` work kind.

It goes out through outreach's one SMTP channel, and none of the patient rules apply: quiet hours,
message caps, consent, opt-out footers and the patient's language are about patients, not about a
clinic's office address. The caller writes the text and keeps it to the minimum necessary.

Like every outreach send, the row is written (`sending`) and committed before the SMTP call, so
a crash after the server took the mail never sends it twice (SMTP cannot be asked afterwards:
the row says `unknown`). When the payload names `on_result`, one work item of that kind reports
the outcome (`sent`, `failed` or `unknown`) in the transaction that records it.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from outreach.channels.base import Attachment, ChannelError, Outgoing
from outreach.runtime import Runtime
from outreach.tables import outreach_provider_mail as table
from referrals.errors import InboundError, PeerError
from referrals.store.work import WorkItem

WORK_KIND = "outreach.provider-email"
SENDING, SENT, FAILED, UNKNOWN = "sending", "sent", "failed", "unknown"

log = logging.getLogger("refloop.outreach.provider_mail")

_ADDRESS = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+$")


@dataclass(frozen=True)
class ProviderMail:
    to: str
    subject: str
    text: str
    purpose: str
    html: str = ""
    referral_id: str = ""
    attachments: tuple[Attachment, ...] = ()
    on_result: str = ""
    context: dict[str, Any] | None = None

    @staticmethod
    def from_payload(payload: dict[str, Any]) -> ProviderMail:
        """The mail a payload asks for; InboundError (kept in quarantine) when it is wrong."""
        to = str(payload.get("to") or "").strip()
        subject = str(payload.get("subject") or "").strip()
        text = str(payload.get("text") or "")
        if not _ADDRESS.match(to):
            raise InboundError(f"provider mail: 'to' {to!r} is not one email address",
                               expression="to")
        if not subject or "\n" in subject or "\r" in subject:
            raise InboundError("provider mail: 'subject' must be one non-empty line",
                               expression="subject")
        if not text.strip():
            raise InboundError("provider mail: 'text' is empty", expression="text")
        return ProviderMail(
            to=to, subject=subject, text=text, html=str(payload.get("html") or ""),
            purpose=str(payload.get("purpose") or "provider-mail")[:64],
            referral_id=str(payload.get("referral_id") or "")[:64],
            attachments=tuple(_attachment(a) for a in payload.get("attachments") or []),
            on_result=str(payload.get("on_result") or ""),
            context=dict(payload.get("context") or {}))


def handle(rt: Runtime, item: WorkItem) -> None:
    """`outreach.provider-email`: send once, record the outcome, report it to `on_result`."""
    mail = ProviderMail.from_payload(item.payload)
    key = item.idempotency_key
    channel = rt.channels.get("email")
    if channel is None:
        raise PeerError("provider mail cannot be sent: no SMTP server is configured; set "
                        "[outreach.smtp] host and from_address", retryable=True)
    with rt.db.write() as c:
        row = c.execute(sa.select(table.c.status).where(table.c.key == key)).first()
        if row is not None and row.status in (SENT, FAILED, UNKNOWN):
            return
        if row is not None:  # `sending`: an attempt stopped after the SMTP call began
            _finish(rt, c, key, mail, UNKNOWN, error="an earlier attempt was interrupted "
                    "during the SMTP call; not sent again, to avoid a duplicate")
            return
        now = rt.now()
        c.execute(table.insert().values(
            key=key, referral_id=mail.referral_id, purpose=mail.purpose, address=mail.to,
            subject=mail.subject[:500], status=SENDING, created_at=now, updated_at=now))
    outgoing = Outgoing(message_id=uuid.uuid4().hex, channel="email", to=mail.to,
                        text=mail.text, subject=mail.subject, html=mail.html,
                        attachments=mail.attachments)
    try:
        result = channel.send(outgoing)
    except ChannelError as exc:
        _failed(rt, key, mail, exc)
        return
    with rt.db.write() as c:
        _finish(rt, c, key, mail, SENT, message_id=result.provider_sid)
    log.info("provider mail sent", extra={"referral_id": mail.referral_id,
                                          "purpose": mail.purpose})


def status_of(rt: Runtime, key: str) -> str | None:
    """The recorded status of one provider mail (by its work item's key)."""
    with rt.db.read() as c:
        return c.execute(sa.select(table.c.status).where(table.c.key == key)).scalar()


def _failed(rt: Runtime, key: str, mail: ProviderMail, exc: ChannelError) -> None:
    if exc.retryable and not exc.maybe_sent:
        with rt.db.write() as c:  # nothing went out: the next attempt may send it
            c.execute(table.delete().where(table.c.key == key, table.c.status == SENDING))
        raise PeerError(f"provider mail: {exc}", retryable=True) from exc
    with rt.db.write() as c:
        _finish(rt, c, key, mail, UNKNOWN if exc.maybe_sent else FAILED, error=str(exc))
    log.warning("provider mail not sent", extra={"referral_id": mail.referral_id,
                                                 "purpose": mail.purpose, "why": str(exc)})


def _finish(rt: Runtime, c: Connection, key: str, mail: ProviderMail, status: str, *,
            message_id: str = "", error: str = "") -> None:
    now: datetime = rt.now()
    c.execute(table.update().where(table.c.key == key).values(
        status=status, message_id=message_id[:255], error=error[:2000], updated_at=now))
    if mail.on_result:
        rt.work.enqueue(mail.on_result, {
            "key": key, "status": status, "message_id": message_id, "error": error,
            "referral_id": mail.referral_id, "purpose": mail.purpose, "to": mail.to,
            "at": now.isoformat(), "context": mail.context or {}},
            key=f"{mail.on_result}:{key}", conn=c)


def _attachment(raw: Any) -> Attachment:
    try:
        content = base64.b64decode(str(raw["content_b64"]), validate=True)
        return Attachment(str(raw["filename"]), str(raw["content_type"]), content)
    except (KeyError, TypeError, binascii.Error) as exc:
        raise InboundError("provider mail: an attachment needs filename, content_type and "
                           "content_b64 (base64)", expression="attachments") from exc
