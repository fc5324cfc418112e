"""Patient replies (SMS, a key press in a call, the email unsubscribe link), already stored in
the inbox before their 2xx.

Outreach handles opt-out, opt-in and HELP itself, first: an opt-out takes effect before the next
send (seconds) and becomes a Consent resource; one confirmation message goes back. Then the reply
is offered to the `reply_hooks` (other adapters, cross-adapter contract 3). A reply nobody
consumed gets outreach's own handling: a booking intent sends the self-scheduling link (or opens
a coordinator task when there is none), "call me" opens a call task, and free text opens a task
for a person to read it and pauses the ladder until that person decides.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy.engine import Connection

from outreach import fhir, keywords, tokens
from outreach.delivery import MessageAsk, deliver
from outreach.engine import (
    ACTOR,
    CALL_OUTCOMES,
    LINK_OUTCOMES,
    REPLY_OUTCOMES,
    TASK_OUTCOME_KIND,
    pause_plan,
    stop_plan,
)
from outreach.rules import consent_state
from outreach.runtime import Runtime
from outreach.store import Message
from referrals.lifecycle import TABLE
from referrals.model import Command, Reason, Referral
from referrals.store.work import WorkItem

log = logging.getLogger("refloop.outreach")

VOICE_KEYS = {"1": "connect", "2": "book", "9": keywords.OPT_OUT}


@dataclass(frozen=True)
class Reply:
    inbox_id: int
    channel: str        # sms | voice | email
    address: str
    text: str
    kind: str | None    # opt-out | opt-out-all | opt-in | help | None
    about: Message | None
    others: list[Message]  # the newest message to this address of every other patient


def handle_inbound(rt: Runtime, item: WorkItem) -> None:
    stored = rt.inbox.get(item.payload["inbox_id"])
    form = dict(parse_qsl(stored.body.decode("utf-8", "replace"), keep_blank_values=True))
    reply = _read(rt, stored.id, stored.channel, form, item.payload)
    if reply is None:
        rt.inbox.mark(stored.id, "done", "not a reply to any outreach message")
        return
    if reply.about is None:
        _unmatched(rt, reply)
        return
    referral = rt.store.get(reply.about.referral_id)
    now = rt.now()
    with rt.db.write() as c:
        received = _record(rt, c, reply, referral, now)
        rt.inbox.mark(stored.id, "done", f"reply {received.id}: {reply.kind or 'text'}", conn=c)
    if reply.kind in (keywords.OPT_OUT, keywords.OPT_OUT_ALL, keywords.OPT_IN):
        _consent(rt, reply, referral, now)
    elif reply.kind == keywords.HELP:
        _answer(rt, reply, referral, "help", {})
    elif reply.kind == "connect":
        _replied(rt, referral, reply, "connected to the coordinators by key 1", stop=True)
    elif reply.kind == "book":
        _booking(rt, referral, reply, channels=("sms",))
    elif not _offer(rt, reply, referral, received):
        _own(rt, referral, reply)


def _read(rt: Runtime, inbox_id: int, channel: str, form: dict[str, str],
          payload: dict[str, Any]) -> Reply | None:
    if channel == "twilio-sms":
        address, text = form.get("From", ""), form.get("Body", "")
        return _reply(rt, inbox_id, "sms", address, text, keywords.classify(text))
    if channel == "twilio-voice":
        called = rt.ostore.message(str(payload.get("m", "")))
        if called is None:
            return None
        digit = form.get("Digits", "")[:1]
        reply = _reply(rt, inbox_id, "voice", called.address, f"pressed {digit}",
                       VOICE_KEYS.get(digit))
        return Reply(**{**reply.__dict__, "about": called})
    if channel == "email-unsubscribe":
        found = tokens.read(rt.secret, form.get("token", ""))
        if found is None:
            return None
        patient, address, _channel = found
        latest = [m for m in rt.ostore.last_outbound_to(address, channels=("email",))
                  if m.patient == patient]
        return Reply(inbox_id, "email", address, "unsubscribe link", keywords.OPT_OUT,
                     latest[0] if latest else None, [])
    return None


def _reply(rt: Runtime, inbox_id: int, channel: str, address: str, text: str,
           kind: str | None) -> Reply:
    messaged = rt.ostore.last_outbound_to(address)
    return Reply(inbox_id, channel, address, text, kind, messaged[0] if messaged else None,
                 messaged[1:])


def _record(rt: Runtime, c: Connection, reply: Reply, referral: Referral, now: datetime
            ) -> Message:
    assert reply.about is not None
    message = Message(
        id=str(uuid.uuid4()), key=f"inbound:{reply.inbox_id}", direction="in",
        referral_id=referral.id, patient=referral.patient, purpose="reply",
        channel=reply.channel, address=reply.address, body=reply.text[:1600],
        status="received", reply_context=reply.about.reply_context,
        in_response_to=reply.about.id, created_at=now, sent_at=now, updated_at=now,
        plan_id=reply.about.plan_id, rung=reply.about.rung)
    message = rt.ostore.put_message(c, message)
    rt.resources.put(fhir.communication(
        communication_id=message.id, request_id=None, referral=referral, purpose="reply",
        channel=reply.channel, status="completed", received=now, text=message.body,
        in_response_to=reply.about.id, inbound=True), conn=c)
    return message


def _consent(rt: Runtime, reply: Reply, referral: Referral, now: datetime) -> None:
    """Opt-out (or back in) every patient we messaged at this address, on this channel."""
    kind = "opt-in" if reply.kind == keywords.OPT_IN else "opt-out"
    channel = "all" if reply.kind == keywords.OPT_OUT_ALL else reply.channel
    source = {"sms": "sms-keyword", "voice": "voice-key-9", "email": "email-link"}[reply.channel]
    patients = [referral.patient] + [m.patient for m in reply.others]
    with rt.db.write() as c:
        rt.ostore.lock_address(c, reply.address)  # one change, one confirmation
        was = consent_state(rt.ostore.address_consent_events(reply.address, c))
        for patient in dict.fromkeys(patients):
            rt.ostore.add_consent(c, patient=patient, channel=channel, kind=kind, source=source,
                                  text=reply.text, at=now)
            _put_consent(rt, c, patient, now)
        rt.ostore.add_consent(c, patient=referral.patient, channel=channel, kind=kind,
                              source=source, address=reply.address, text=reply.text, at=now)
    log.info("outreach consent", extra={"referral_id": referral.id, "kind": kind,
                                        "channel": channel, "source": source})
    if reply.channel == "email" or (kind == "opt-out" and not rt.config.confirm_opt_out):
        return
    if (reply.channel in was) == (kind == "opt-out"):
        return  # nothing changed (a repeated STOP or START): one confirmation per change
    purpose = "opt-in-confirmation" if kind == "opt-in" else "opt-out-confirmation"
    _answer(rt, reply, referral, purpose, {"channel": reply.channel})


def _put_consent(rt: Runtime, c: Connection, patient: str, now: datetime) -> None:
    events = [e for e in rt.ostore.consent_events(patient, c) if not e["address"]]
    denied: dict[str, tuple[datetime, str]] = {}
    for channel in sorted(consent_state((e["at"], e["channel"], e["kind"]) for e in events)):
        last = [e for e in events if e["kind"] == "opt-out" and e["channel"] in (channel, "all")]
        denied[channel] = (last[-1]["at"], last[-1]["source"]) if last else (now, "")
    consent_id = "outreach-" + uuid.uuid5(uuid.NAMESPACE_URL, patient).hex[:24]
    rt.resources.put(fhir.consent(consent_id=consent_id, patient=patient, denied=denied,
                                  organization=rt.config.practice_name, now=now), conn=c)


def _answer(rt: Runtime, reply: Reply, referral: Referral, purpose: str,
            params: dict[str, str]) -> None:
    """The one answer a keyword gets (confirmation, HELP), by SMS to the number that wrote."""
    if reply.channel != "sms":
        return
    deliver(rt, f"outreach.answer:{reply.inbox_id}", MessageAsk(
        referral_id=referral.id, purpose=purpose, channels=("sms",), params=params,
        answer_to=reply.address))


def _offer(rt: Runtime, reply: Reply, referral: Referral, received: Message) -> bool:
    """Offer the reply to the other adapters' hooks; True when one consumed it."""
    offered = {"referral_id": referral.id, "patient": referral.patient, "text": reply.text,
               "channel": reply.channel, "received_at": received.created_at.isoformat(),
               "communication_id": received.id, "reply_context": received.reply_context}
    for hook in list(rt.reply_hooks):
        try:
            if hook(dict(offered)):
                log.info("reply consumed by a hook", extra={"referral_id": referral.id})
                return True
        except Exception:
            log.exception("a reply hook failed; the reply goes on to the next",
                          extra={"referral_id": referral.id})
    return False


def _own(rt: Runtime, referral: Referral, reply: Reply) -> None:
    intent = keywords.intent(reply.text)
    if intent == "book":
        _booking(rt, referral, reply, channels=(reply.channel, "sms", "email"))
    elif intent == "call-me":
        _replied(rt, referral, reply, "asked to be called", stop=True)  # before the new task
        _task(rt, referral, reply, "call-patient", "The patient asked to be called",
              CALL_OUTCOMES)
        rt.work.enqueue("outreach.message", {"referral_id": referral.id,
                                             "purpose": "coordinator-callback",
                                             "channel": reply.channel},
                        key=f"outreach.message:{referral.id}:coordinator-callback:"
                            f"reply-{reply.inbox_id}")
    else:
        _task(rt, referral, reply, "read-reply",
              f"The patient wrote: \u201c{reply.text[:300]}\u201d. Automatic outreach is "
              "paused until you decide", REPLY_OUTCOMES)
        _replied(rt, referral, reply, "free-text reply", stop=False)
        pause_plan(rt, referral.id, "the patient replied; a person must read it")


def _booking(rt: Runtime, referral: Referral, reply: Reply, channels: tuple[str, ...]) -> None:
    link = rt.issue_booking_link(referral.id) if rt.issue_booking_link else None
    if link:
        rt.work.enqueue("outreach.message", {"referral_id": referral.id,
                                             "purpose": "booking-link", "params": {"link": link},
                                             "channel": "sms" if reply.channel == "voice"
                                             else reply.channel},
                        key=f"outreach.message:{referral.id}:booking-link:reply-{reply.inbox_id}")
    else:
        _task(rt, referral, reply, "send-booking-link", "The patient wants to book; no "
              "self-scheduling link is available, so please help them book", LINK_OUTCOMES)
    _replied(rt, referral, reply, "wants to book", stop=True)


def _task(rt: Runtime, referral: Referral, reply: Reply, kind: str, reason: str,
          outcomes: list[str]) -> None:
    about = reply.about
    data: dict[str, Any] = {"address": reply.address, "reply_inbox_id": reply.inbox_id}
    if about is not None and about.plan_id:
        data["plan_id"] = about.plan_id
    rt.tasks.open(referral.id, kind, reason, due_at=rt.now() + timedelta(hours=4),
                  outcomes=outcomes, on_outcome=TASK_OUTCOME_KIND,
                  key=f"outreach.reply-task:{reply.inbox_id}:{kind}", data=data)


def _replied(rt: Runtime, referral: Referral, reply: Reply, what: str, *, stop: bool) -> None:
    """Lifecycle: the patient replied (an outreach attempt that reached them)."""
    now = rt.now()
    with rt.db.write() as c:
        current = rt.store.get(referral.id, c)
        if current.stage in TABLE["record-outreach"].sources:
            rt.referrals.act(referral.id, Command(
                "record-outreach", actor=ACTOR, at=now, source="outreach",
                reason=Reason("patient-replied", f"by {reply.channel}: {what}")), conn=c)
    if stop:
        for plan in rt.ostore.plans_for(referral.id):
            if plan.status in ("active", "paused"):
                stop_plan(rt, plan, f"the patient replied ({what})")


def _unmatched(rt: Runtime, reply: Reply) -> None:
    """A message from a number we never wrote to: an opt-out is still honoured for the
    address; anything else is kept for people to see."""
    if reply.kind in (keywords.OPT_OUT, keywords.OPT_OUT_ALL, keywords.OPT_IN):
        kind = "opt-in" if reply.kind == keywords.OPT_IN else "opt-out"
        with rt.db.write() as c:
            rt.ostore.add_consent(c, patient="", channel=reply.channel, kind=kind,
                                  source="sms-keyword", address=reply.address,
                                  text=reply.text, at=rt.now())
            rt.inbox.mark(reply.inbox_id, "done", f"{kind} from a number we never wrote to",
                          conn=c)
        return
    rt.inbox.mark(reply.inbox_id, "done", "a message from a number we never wrote to")
