"""Provider status callbacks (already stored in the inbox before their 2xx): the message's
status moves forward only (queued, sent, delivered, or undelivered/failed with an error code);
a bad number marks the contact point failing and moves the ladder on."""

from __future__ import annotations

import logging
from dataclasses import replace
from urllib.parse import parse_qsl

from outreach import fhir
from outreach.channels.twilio import BAD_ADDRESS
from outreach.delivery import MessageAsk, advance_ladder
from outreach.runtime import Runtime
from outreach.store import RANK
from referrals.store.work import WorkItem

log = logging.getLogger("refloop.outreach")

NOT_REACHED = {"undelivered", "failed", "busy", "no-answer", "canceled"}
UNAVAILABLE = {"30003", "30008"}


def handle_status(rt: Runtime, item: WorkItem) -> None:
    stored = rt.inbox.get(item.payload["inbox_id"])
    form = dict(parse_qsl(stored.body.decode("utf-8", "replace"), keep_blank_values=True))
    sid = form.get("MessageSid") or form.get("CallSid") or ""
    status = (form.get("MessageStatus") or form.get("CallStatus") or "").lower()
    code = form.get("ErrorCode") or ""
    message = rt.ostore.message_by_sid(sid) if sid else None
    if message is None and item.payload.get("m"):
        message = rt.ostore.message(str(item.payload["m"]))
    if message is None:
        rt.inbox.mark(stored.id, "done", "status for a message we do not know")
        return
    now = rt.now()
    moves = RANK.get(status, -1) > RANK.get(message.status, -1)
    with rt.db.write() as c:
        if message.provider_sid is None and sid:
            rt.ostore.update_message(c, message.id, provider_sid=sid, updated_at=now)
        if not moves:
            rt.inbox.mark(stored.id, "done", f"{status} after {message.status}: kept", conn=c)
            return
        rt.ostore.update_message(c, message.id, status=status, error_code=code,
                                 updated_at=now)
        referral = rt.store.get(message.referral_id, c)
        updated = replace(message, status=status, error_code=code)
        if status in NOT_REACHED:
            reason = _reason(status, code)
            rt.resources.put(fhir.communication(
                communication_id=message.id, request_id=message.id, referral=referral,
                purpose=message.purpose, channel=message.channel, status="not-done",
                sent=message.sent_at, status_reason=reason,
                reason_text=f"{status}" + (f" (error {code})" if code else ""),
                provider_sid=sid), conn=c)
            if code in BAD_ADDRESS:
                rt.ostore.mark_failing(c, message.address, message.channel, code,
                                       f"{status} (error {code})", now)
        elif status in ("delivered", "read", "completed"):
            rt.resources.put(fhir.communication(
                communication_id=message.id, request_id=message.id, referral=referral,
                purpose=message.purpose, channel=message.channel, status="completed",
                sent=message.sent_at, received=now, provider_sid=sid,
                text=updated.body if message.channel != "email" else updated.subject), conn=c)
        rt.inbox.mark(stored.id, "done", f"{message.status} -> {status}", conn=c)
    if status in NOT_REACHED and code in BAD_ADDRESS:
        advance_ladder(rt, MessageAsk(message.referral_id, message.purpose,
                                      plan_id=message.plan_id, rung=message.rung), now)
    log.info("outreach status", extra={"referral_id": message.referral_id,
                                       "message_id": message.id, "status": status,
                                       "error_code": code})


def _reason(status: str, code: str) -> str:
    if code in BAD_ADDRESS:
        return "invalid-phone-number"
    if code in UNAVAILABLE or status in ("busy", "no-answer"):
        return "recipient-unavailable"
    return "undeliverable" if status == "undelivered" else "system-error"
