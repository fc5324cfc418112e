"""One message to a patient: decide (the rule engine), render, record, hand to the provider.

Durability: the message row is written with its idempotency key and status `sending` and
committed before the provider call; the provider's id is recorded after it. A crash between the
two leaves `sending`, and the next attempt asks the provider whether it took the message (by
recipient and exact text, and by the status callback that carries our message id) before it
sends again, so a retry never sends twice. Email cannot be asked: an interrupted email is not
resent; it is recorded with delivery unknown (message status `unknown`, Communication status
`unknown`) and a coordinator task asks a person to check with the patient.
"""

from __future__ import annotations

import base64
import logging
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from outreach import fhir, tokens
from outreach.channels.base import Attachment, ChannelError, Outgoing, SendResult
from outreach.contacts import contact_points, language
from outreach.rules import DEFER, SEND, SKIP, Ask, Decision, PatientView, Situation, decide
from outreach.runtime import Runtime
from outreach.store import RANK, Message
from outreach.templates import TemplateError, check_minimum_necessary, render, voice_keys
from outreach.timezones import resolve
from referrals.errors import PeerError, RetryLater
from referrals.lifecycle import TABLE
from referrals.model import Command, Link, Reason, Referral

log = logging.getLogger("refloop.outreach")

SYSTEM_ACTOR_SOURCE = "outreach"
#: outcomes of deliver()
SENT, DEFERRED, SKIPPED, FAILED, UNKNOWN = "sent", "deferred", "skipped", "failed", "unknown"
#: the coordinator task for a message whose delivery cannot be known (an interrupted email)
CHECK_DELIVERY, CHECK_OUTCOMES = "check-delivery", ["received", "not-received"]
TASK_OUTCOME_KIND = "outreach.task-outcome"
#: message statuses that end a message's delivery (nothing more is attempted for its key)
OPEN_STATUSES = ("deferred", "sending", "retry")


@dataclass(frozen=True)
class MessageAsk:
    referral_id: str
    purpose: str
    channels: tuple[str, ...] = ("sms", "email")
    params: dict[str, str] = field(default_factory=dict)
    window: str = "day"
    expires_at: datetime | None = None
    reply_context: str = ""
    attachments: tuple[Attachment, ...] = ()
    plan_id: str | None = None
    rung: int | None = None
    #: an answer to the patient (HELP, opt-out confirmation): to this address, no caps
    answer_to: str = ""
    #: record the send as an outreach attempt on the referral (ladder sends)
    lifecycle: bool = False

    @staticmethod
    def from_payload(payload: dict[str, Any]) -> MessageAsk:
        """The `outreach.message` work payload (cross-adapter contract 1)."""
        channel = payload.get("channel")
        expires = payload.get("expires_at")
        return MessageAsk(
            referral_id=str(payload["referral_id"]), purpose=str(payload["purpose"]),
            channels=(str(channel),) if channel else ("sms", "email"),
            params={str(k): str(v) for k, v in (payload.get("params") or {}).items()},
            expires_at=datetime.fromisoformat(expires.replace("Z", "+00:00"))
            if expires else None,
            reply_context=str(payload.get("reply_context") or ""),
            attachments=tuple(Attachment(a["filename"], a["content_type"],
                                         base64.b64decode(a["content_b64"]))
                              for a in payload.get("attachments") or []))


@dataclass(frozen=True)
class Outcome:
    status: str
    message: Message | None
    decision: Decision | None = None


def deliver(rt: Runtime, key: str, ask: MessageAsk) -> Outcome:
    """Decide and, when allowed, send; idempotent on `key`. Raises RetryLater for a deferral
    and PeerError for a provider failure worth retrying."""
    existing = rt.ostore.message_by_key(key)
    if existing is not None and existing.status not in OPEN_STATUSES:
        return Outcome(_outcome_of(existing), existing)
    referral = rt.store.get(ask.referral_id)
    if existing is not None and existing.status == "sending":
        settled = _reconcile(rt, referral, ask, existing)
        if settled is not None:
            return settled
    now = rt.now()
    patient = rt.ostore.patient(referral.patient)
    view = patient_view(rt, patient, now)
    remaining = ask.channels
    while True:
        decision = _decide(rt, referral, view, replace(ask, channels=remaining), now)
        if decision.outcome != SEND:
            return _not_sent(rt, key, ask, referral, decision, existing, now)
        try:
            rendered = _render(rt, referral, patient, ask, decision)
            break
        except _Unfit as unfit:
            remaining = tuple(c for c in remaining if c != decision.channel)
            if not remaining:
                return _not_sent(rt, key, ask, referral, replace(
                    decision, outcome=SKIP, rule=unfit.rule, reason=str(unfit)), existing, now)
    return _send(rt, key, ask, referral, decision, rendered, existing, now)


def patient_view(rt: Runtime, patient: dict[str, Any] | None, now: datetime) -> PatientView:
    contacts, phone_zones = contact_points(patient, rt.config.default_region, now)
    zones = resolve(patient, phone_zones, rt.config.default_time_zone)
    return PatientView(tuple(contacts), zones.zones, zones.source)


def _decide(rt: Runtime, referral: Referral, view: PatientView, ask: MessageAsk,
            now: datetime) -> Decision:
    if ask.answer_to:
        contacts = tuple(c for c in view.contacts if c.address == ask.answer_to) or \
            (_answer_point(ask),)
        view = replace(view, contacts=contacts)
    consent = rt.ostore.consent(referral.patient, [c.address for c in view.contacts])
    history = rt.ostore.history(referral.patient, now - timedelta(days=8))
    stopped = "" if ask.answer_to or ask.plan_id is None else _plan_stop(rt, ask.plan_id)
    situation = Situation(open=not referral.terminal or bool(ask.answer_to), stopped=stopped)
    return decide(situation, view, Ask(ask.purpose, ask.channels, ask.window, ask.expires_at,
                                       answer=bool(ask.answer_to)),
                  consent, history, rt.config.policy, now)


def _answer_point(ask: MessageAsk) -> Any:
    from outreach.contacts import ContactPoint

    return ContactPoint(ask.channels[0], ask.answer_to, ask.answer_to, 1, "")


def _plan_stop(rt: Runtime, plan_id: str) -> str:
    plan = rt.ostore.plan(plan_id)
    if plan is None or plan.status in ("active", "finished"):
        return ""
    return plan.stop_reason or plan.status


class _Unfit(Exception):
    def __init__(self, rule: str, why: str) -> None:
        super().__init__(why)
        self.rule = rule


@dataclass(frozen=True)
class _Rendered:
    text: str
    subject: str
    html: str
    language: str
    notes: tuple[str, ...]


def _render(rt: Runtime, referral: Referral, patient: dict[str, Any] | None, ask: MessageAsk,
            decision: Decision) -> _Rendered:
    params = {"practice": rt.config.practice_name, "practice_phone": rt.config.practice_phone,
              "referrer": referrer_name(rt, referral), **ask.params}
    if ask.purpose == "first-contact" and "link" not in params and rt.issue_booking_link:
        link = rt.issue_booking_link(referral.id)
        if link:
            params["link"] = link
    if decision.channel == "email":
        params.setdefault("unsubscribe", unsubscribe_url(rt, referral.patient, decision.address))
    wanted = language(patient)
    try:
        rendered = render(ask.purpose, decision.channel, wanted, params,
                          segment_limit=rt.config.sms_segment_limit)
    except TemplateError as exc:
        raise _Unfit("template", str(exc)) from exc
    text = rendered.text
    if decision.channel == "voice":
        text = f"{text} {voice_keys(rendered.language)}"
    if decision.channel in ("sms", "voice"):
        found = check_minimum_necessary(text, forbidden_terms(rt, referral))
        if found:
            raise _Unfit("minimum-necessary", f"the {decision.channel} text would reveal "
                         f"clinical detail ({found!r}); not sent by {decision.channel}")
    return _Rendered(text, rendered.subject, rendered.html, rendered.language,
                     tuple(rendered.notes))


def _send(rt: Runtime, key: str, ask: MessageAsk, referral: Referral, decision: Decision,
          rendered: _Rendered, existing: Message | None, now: datetime) -> Outcome:
    message_id = existing.id if existing else str(uuid.uuid4())
    reason = "; ".join((decision.reason, *rendered.notes))
    message = Message(
        id=message_id, key=key, direction="out", referral_id=referral.id,
        patient=referral.patient, plan_id=ask.plan_id, rung=ask.rung, purpose=ask.purpose,
        channel=decision.channel, address=decision.address, language=rendered.language,
        subject=rendered.subject, body=rendered.text, status="sending", rule=decision.rule,
        reason=reason, reply_context=ask.reply_context,
        attempts=(existing.attempts if existing else 0) + 1, created_at=now, updated_at=now)
    with rt.db.write() as c:
        message = rt.ostore.put_message(c, message)
        rt.ostore.record_decision(c, referral.id, key, ask.purpose, decision, now)
    outgoing = _outgoing(rt, message, rendered.html, ask, referral)
    try:
        result = rt.channels[message.channel].send(outgoing)
    except KeyError:
        return _failed(rt, message, referral, ask, "channel-off", f"no {message.channel} "
                       "channel is configured ([outreach.twilio] or [outreach.smtp])", now)
    except ChannelError as exc:
        return _provider_error(rt, message, referral, ask, exc, now)
    return _record_sent(rt, message, referral, ask, result, rt.now())


def _record_sent(rt: Runtime, message: Message, referral: Referral, ask: MessageAsk,
                 result: SendResult, now: datetime) -> Outcome:
    with rt.db.write() as c:
        first = rt.ostore.sent_count(referral.id, c) == 0
        # a status callback may have arrived before the provider's answer: never go backwards
        current = rt.ostore.message(message.id, c)
        status = result.status
        if current is not None and RANK.get(current.status, -1) > RANK.get(status, -1):
            status = current.status
        sent = replace(message, status=status, provider_sid=result.provider_sid,
                       sent_at=now, updated_at=now)
        rt.ostore.update_message(c, message.id, status=status,
                                 provider_sid=result.provider_sid, sent_at=now, updated_at=now)
        _put_request(rt, c, sent, referral, "completed", ask)
        rt.resources.put(fhir.communication(
            communication_id=message.id, request_id=message.id, referral=referral,
            purpose=message.purpose, channel=message.channel, status="completed", sent=now,
            text=message.body if message.channel != "email" else message.subject,
            provider_sid=result.provider_sid), conn=c)
        if ask.lifecycle:
            record_attempt(rt, c, referral.id, message, first, now)
    log.info("outreach sent", extra={"referral_id": referral.id, "message_id": message.id,
                                     "channel": message.channel, "purpose": message.purpose,
                                     "provider_status": result.status})
    return Outcome(SENT, sent)


def record_attempt(rt: Runtime, c: Connection, referral_id: str, message: Message, first: bool,
                   now: datetime) -> None:
    """The lifecycle moves: start-outreach when allowed, then record-outreach; a referral not
    yet in an outreach stage gets the first contact linked instead."""
    from referrals.model import Actor

    actor = Actor("Device/refloop-outreach", "Refloop outreach")
    current = rt.store.get(referral_id, c)
    what = "first contact" if first else "outreach"
    if current.stage in TABLE["start-outreach"].sources:
        current = rt.referrals.act(referral_id, Command(
            "start-outreach", actor=actor, at=now, source=SYSTEM_ACTOR_SOURCE), conn=c)
    if current.stage in TABLE["record-outreach"].sources:
        rt.referrals.act(referral_id, Command(
            "record-outreach", actor=actor, at=now, source=SYSTEM_ACTOR_SOURCE,
            reason=Reason(f"{message.channel}-sent", f"{what} by {message.channel} "
                          f"({message.purpose})")), conn=c)
    elif first and current.stage in TABLE["link"].sources:
        rt.referrals.act(referral_id, Command(
            "link", actor=actor, at=now, source=SYSTEM_ACTOR_SOURCE, changes={"add_outputs": [
                Link("communication", f"Communication/{message.id}",
                     f"first contact by {message.channel}")]}), conn=c)


def _provider_error(rt: Runtime, message: Message, referral: Referral, ask: MessageAsk,
                    exc: ChannelError, now: datetime) -> Outcome:
    if exc.maybe_sent:
        raise PeerError(f"{exc}; the next attempt checks with the provider before sending",
                        retryable=True) from exc
    if exc.bad_address:
        with rt.db.write() as c:
            rt.ostore.mark_failing(c, message.address, message.channel, exc.code, str(exc), now)
        advance_ladder(rt, ask, now)
        return _failed(rt, message, referral, ask, "invalid-phone-number"
                       if message.channel != "email" else "undeliverable", str(exc), now,
                       code=exc.code)
    if exc.opted_out:
        with rt.db.write() as c:
            rt.ostore.add_consent(c, patient=referral.patient, channel=message.channel,
                                  address=message.address, kind="opt-out",
                                  source=f"provider-{exc.code}", at=now)
        return _failed(rt, message, referral, ask, "patient-objection", str(exc), now,
                       code=exc.code)
    if exc.retryable:
        with rt.db.write() as c:
            rt.ostore.update_message(c, message.id, status="retry", error_code=exc.code,
                                     updated_at=now)
        raise PeerError(str(exc), retryable=True) from exc
    _failed(rt, message, referral, ask, "system-error", str(exc), now, code=exc.code)
    raise PeerError(str(exc), retryable=False) from exc


def _failed(rt: Runtime, message: Message, referral: Referral, ask: MessageAsk, reason_code: str,
            why: str, now: datetime, code: str = "") -> Outcome:
    failed = replace(message, status="not-done", error_code=code, reason=why, updated_at=now)
    with rt.db.write() as c:
        rt.ostore.update_message(c, message.id, status="not-done", error_code=code,
                                 reason=why[:2000], updated_at=now)
        _put_request(rt, c, failed, referral, "revoked", ask)
        rt.resources.put(fhir.communication(
            communication_id=message.id, request_id=message.id, referral=referral,
            purpose=message.purpose, channel=message.channel, status="not-done",
            status_reason=reason_code, reason_text=why), conn=c)
    log.info("outreach not sent", extra={"referral_id": referral.id, "message_id": message.id,
                                         "channel": message.channel, "why": reason_code})
    return Outcome(FAILED, failed)


def _not_sent(rt: Runtime, key: str, ask: MessageAsk, referral: Referral, decision: Decision,
              existing: Message | None, now: datetime) -> Outcome:
    """Record a deferral or a skip: the decision, the message row, a not-done Communication and
    the CommunicationRequest with its occurrence window."""
    status = "deferred" if decision.outcome == DEFER else "not-done"
    message = Message(
        id=existing.id if existing else str(uuid.uuid4()), key=key, direction="out",
        referral_id=referral.id, patient=referral.patient, plan_id=ask.plan_id, rung=ask.rung,
        purpose=ask.purpose, channel=decision.channel or ask.channels[0],
        address=decision.address, status=status, rule=decision.rule,
        reason=decision.reason[:2000], reply_context=ask.reply_context,
        attempts=existing.attempts if existing else 0, created_at=now, updated_at=now)
    with rt.db.write() as c:
        message = rt.ostore.put_message(c, message)
        rt.ostore.record_decision(c, referral.id, key, ask.purpose, decision, now)
        _put_request(rt, c, message, referral, "active" if status == "deferred" else "revoked",
                     ask, not_before=decision.not_before)
        suffix = f"-{int(now.timestamp())}" if status == "deferred" else ""
        rt.resources.put(fhir.communication(
            communication_id=f"{message.id}{suffix}", request_id=message.id, referral=referral,
            purpose=ask.purpose, channel=message.channel, status="not-done",
            status_reason=decision.status_reason, reason_text=decision.reason), conn=c)
    log.info("outreach " + ("deferred" if status == "deferred" else "skipped"),
             extra={"referral_id": referral.id, "message_id": message.id, "rule": decision.rule})
    if decision.outcome == DEFER and decision.not_before is not None:
        raise RetryLater(decision.reason, delay_seconds=max(
            1.0, (decision.not_before - now).total_seconds()))
    return Outcome(SKIPPED, message, decision)


def _reconcile(rt: Runtime, referral: Referral, ask: MessageAsk, message: Message
               ) -> Outcome | None:
    """A message left `sending` by an interrupted attempt: did the provider take it?"""
    channel = rt.channels.get(message.channel)
    if channel is None:
        return None
    outgoing = _outgoing(rt, message, "", ask, referral)
    try:
        found = channel.find_sent(outgoing, message.updated_at)
    except ChannelError as exc:
        if exc.retryable or not exc.maybe_sent:
            # the provider could not be asked this time (a time-out on a loaded line): ask
            # again later, never give the message up for that
            raise PeerError(f"cannot check an interrupted send yet: {exc}",
                            retryable=exc.retryable) from exc
        why = ("an earlier attempt was interrupted while handing the message to the "
               f"provider, which cannot be asked ({exc}); not sent again, to avoid a duplicate")
        return _delivery_unknown(rt, message, referral, ask, why, rt.now())
    if found is None:
        log.info("interrupted send not found at the provider; sending it now",
                 extra={"referral_id": referral.id, "message_id": message.id})
        return None
    log.info("interrupted send found at the provider; recorded, not sent again",
             extra={"referral_id": referral.id, "message_id": message.id})
    return _record_sent(rt, message, referral, ask, found, rt.now())


def _delivery_unknown(rt: Runtime, message: Message, referral: Referral, ask: MessageAsk,
                      why: str, now: datetime) -> Outcome:
    """The message may or may not have left: say so (message, CommunicationRequest and
    Communication all `unknown`, the attempt's time as when it was sent, so caps count it) and
    open a task for a coordinator to check with the patient."""
    handed = message.updated_at
    unknown = replace(message, status="unknown", reason=why, sent_at=handed, updated_at=now)
    with rt.db.write() as c:
        rt.ostore.update_message(c, message.id, status="unknown", reason=why[:2000],
                                 sent_at=handed, updated_at=now)
        _put_request(rt, c, unknown, referral, "unknown", ask)
        rt.resources.put(fhir.communication(
            communication_id=message.id, request_id=message.id, referral=referral,
            purpose=message.purpose, channel=message.channel, status="unknown", sent=handed,
            status_reason="delivery-unknown", reason_text=why,
            text=message.body if message.channel != "email" else message.subject), conn=c)
        rt.tasks.open(
            referral.id, CHECK_DELIVERY,
            f"The {message.purpose} {message.channel} to {message.address} may not have "
            "reached the patient (interrupted while sending; not sent again to avoid a "
            "duplicate): please check with the patient",
            due_at=now + timedelta(hours=8), outcomes=CHECK_OUTCOMES,
            on_outcome=TASK_OUTCOME_KIND, key=f"outreach.check-delivery:{message.id}",
            data={"message_id": message.id, "plan_id": ask.plan_id, "rung": ask.rung},
            conn=c)
    log.warning("outreach delivery unknown", extra={
        "referral_id": referral.id, "message_id": message.id, "channel": message.channel})
    return Outcome(UNKNOWN, unknown)


def advance_ladder(rt: Runtime, ask: MessageAsk, now: datetime) -> None:
    """A contact point failed for good: run the ladder's next rung now (its own scheduled run
    later finds it done)."""
    if ask.plan_id is None or ask.rung is None:
        return
    rt.work.enqueue("outreach.rung", {"plan_id": ask.plan_id, "rung": ask.rung + 1},
                    key=f"outreach.rung:{ask.plan_id}:{ask.rung + 1}:advanced", run_at=now)


def _put_request(rt: Runtime, c: Connection, message: Message, referral: Referral, status: str,
                 ask: MessageAsk, not_before: datetime | None = None) -> None:
    rt.resources.put(fhir.communication_request(
        request_id=message.id, referral=referral, purpose=message.purpose,
        channel=message.channel, status=status, authored=message.created_at,
        not_before=not_before, expires_at=ask.expires_at), conn=c)


def _outgoing(rt: Runtime, message: Message, html: str, ask: MessageAsk, referral: Referral
              ) -> Outgoing:
    base = rt.base_url
    unsubscribe = unsubscribe_url(rt, message.patient, message.address) \
        if message.channel == "email" else ""
    return Outgoing(
        message_id=message.id, channel=message.channel, to=message.address, text=message.body,
        language=message.language, subject=message.subject, html=html,
        status_callback=f"{base}/outreach/twilio/status?m={message.id}",
        voice_url=f"{base}/outreach/twilio/voice/{message.id}",
        unsubscribe_url=unsubscribe, attachments=ask.attachments,
        source_key=referral.source_key)


def unsubscribe_url(rt: Runtime, patient: str, address: str) -> str:
    return f"{rt.base_url}/outreach/unsubscribe/{tokens.make(rt.secret, patient, address)}"


def referrer_name(rt: Runtime, referral: Referral) -> str:
    """'Dr. Rivera' from the ServiceRequest's requester, else the Practitioner resource."""
    request = rt.ostore.resource(referral.service_request) or {}
    display = str((request.get("requester") or {}).get("display") or "")
    if display:
        return display if display.lower().startswith("dr") else f"Dr. {display.split()[-1]}"
    practitioner = rt.ostore.resource(referral.requester) if referral.requester else None
    for name in (practitioner or {}).get("name") or []:
        if name.get("family"):
            return f"Dr. {name['family']}"
    return "your doctor"


def forbidden_terms(rt: Runtime, referral: Referral) -> list[str]:
    """Words that would reveal the clinical reason: specialty, reason, the ordered service."""
    terms = [referral.specialty]
    for part in referral.reason_text.replace(";", ":").split(":"):
        terms.append(part)
    request = rt.ostore.resource(referral.service_request) or {}
    for concept in [request.get("code") or {}, *(request.get("reasonCode") or [])]:
        terms.append(str(concept.get("text") or ""))
        terms += [str(c.get("display") or "") for c in concept.get("coding") or []]
    return [t for t in terms if t]


def _outcome_of(message: Message) -> str:
    if message.status == "unknown":
        return UNKNOWN
    if message.status == "not-done":
        return SKIPPED if not message.provider_sid and not message.error_code else FAILED
    return SENT
