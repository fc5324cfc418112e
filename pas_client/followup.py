"""Undecided requests always end: notifications in every shape the payers send, $inquire on a
schedule with backoff while a request is pended (or its reply could not be read), and at the
payer's decision deadline (CMS-0057-F: 72 hours expedited, 7 days standard) an escalation to
the coordinator. Nothing stays pended silently.

Notification shapes: the ClaimResponse among the notification's entries (flattened, as
Inferno sends it), the whole PAS response Bundle nested as an entry (the IG's example), or only
the focus's id (2.0.1's id-only): then we read it from the payer, and ask with $inquire when
that read gives nothing."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any, Protocol

from pas_client.client import PayerClient, Reply
from pas_client.config import PasConfig, PayerConfig
from pas_client.reply import DECISION, Reading, find_claim_responses, find_patients, read_reply
from pas_client.response import Decision, from_claim_response
from pas_client.store import UNDECIDED, PriorAuthRequest, PriorAuthStore
from pas_client.update import build_inquiry_bundle
from referrals.errors import InboundError, NotFound
from referrals.model import Actor, Reason, Referral
from referrals.store.work import WorkItem

log = logging.getLogger("refloop.pas")
INQUIRE_KIND = "pas.inquire"
#: the coordinator task an escalation opens, its outcomes and the work kind that applies them
TASK_KIND = "chase-authorization"
OUTCOMES = ("approved", "denied", "resubmit", "withdrawn")


class PriorAuthFlow(Protocol):
    """What following up needs from the flow that sent the request (pas_client/flow.py)."""

    config: PasConfig
    store: PriorAuthStore
    referral_store: Any
    work: Any
    tasks: Any

    def now(self) -> datetime: ...

    def client(self, payer: PayerConfig) -> PayerClient: ...

    def enqueue_submit(self, referral_id: str, payer: str, *, again: bool = False) -> None: ...

    def keep(self, request: PriorAuthRequest | None, payer: PayerConfig, operation: str,
             reply: Reply, *, referral_id: str | None = None) -> int: ...

    def receive(self, request: PriorAuthRequest, operation: str, reply: Reply) -> Reading: ...

    def match(self, decision: Decision, payer: str) -> PriorAuthRequest | None: ...

    def apply_decision(self, request: PriorAuthRequest, decision: Decision, source: str,
                       http_status: int | None = None, reply_id: int | None = None) -> bool: ...

    def move_referral(self, request: PriorAuthRequest, status: str,
                      decision: Decision | None = None) -> None: ...

    def act_on(self, referral: Referral, action: str, reason: Reason | None = None,
               changes: dict[str, Any] | None = None) -> Referral: ...

    def put_task(self, request: PriorAuthRequest, status: str, decision: Decision | None,
                 note: str = "") -> None: ...
OUTCOME_KIND = "pas.coordinator-outcome"
ACTOR_PAS = Actor("Device/refloop-pas", "Refloop prior authorization", "system")
EXPEDITED_LEVEL = "U"


def is_expedited(request: PriorAuthRequest) -> bool:
    """Expedited when the Claim's level of service is Urgent (how we mark it, bundle.py)."""
    if not request.bundle:
        return False
    claim = request.bundle_json()["entry"][0]["resource"]
    for extension in claim.get("extension", []):
        if extension.get("url", "").endswith("extension-levelOfServiceCode"):
            codes = {c.get("code") for c in extension.get("valueCodeableConcept", {})
                     .get("coding", [])}
            return EXPEDITED_LEVEL in codes
    return False


def schedule(flow: PriorAuthFlow, request: PriorAuthRequest, *, soon: bool = False) -> None:
    """Start (or keep) following an undecided request: its decision deadline from now, and the
    next $inquire (soon after a reply we could not read)."""
    payer = flow.config.try_payer(request.payer)
    if payer is None or request.escalated_at is not None:
        return
    now = flow.now()
    deadline = request.deadline_at or now + payer.decision_window(is_expedited(request))
    wanted = now + (timedelta(seconds=payer.inquire_after_error_seconds) if soon
                    else payer.inquire_delay(request.checks))
    current = request.next_check_at
    next_check = min(wanted, deadline) if current is None or soon else min(current, deadline)
    flow.store.update(request.id, deadline_at=deadline, next_check_at=next_check)


def follow_up_due(flow: PriorAuthFlow) -> int:
    """The timer: ask about every request whose next $inquire is due; escalate those past their
    deadline. Returns how many requests it acted on."""
    now = flow.now()
    acted = 0
    for request in flow.store.due_for_follow_up(now):
        if request.deadline_at is not None and now >= request.deadline_at:
            if request.escalated_at is None:
                escalate(flow, request, _overdue(flow, request))
                acted += 1
            continue
        flow.work.enqueue(INQUIRE_KIND, {"request_id": request.id},
                          key=f"{INQUIRE_KIND}:{request.id}:{request.checks}")
        acted += 1
    return acted


def handle_inquire(flow: PriorAuthFlow, item: WorkItem) -> None:
    """One scheduled $inquire: book the next one first (so a failure here never ends the
    follow-up), then ask and apply what the payer says."""
    request = flow.store.try_get(str(item.payload.get("request_id", "")))
    if request is None or request.status not in UNDECIDED or request.escalated_at:
        return
    payer = flow.config.payer(request.payer)
    now = flow.now()
    checks = request.checks + 1
    deadline = request.deadline_at or now + payer.decision_window(is_expedited(request))
    flow.store.update(request.id, checks=checks, deadline_at=deadline,
                      next_check_at=min(now + payer.inquire_delay(checks), deadline))
    inquire(flow, flow.store.try_get(request.id) or request)


def inquire(flow: PriorAuthFlow, request: PriorAuthRequest) -> Reading:
    """Ask the payer ($inquire) about `request`; the reply is kept raw and applied."""
    payer = flow.config.payer(request.payer)
    if not request.bundle:
        raise InboundError(f"request {request.id} was never built, so there is nothing to ask "
                           "the payer about")
    body = json.dumps(build_inquiry_bundle(request.bundle_json(), request.auth_number))
    reply = flow.client(payer).send_inquire(body.encode())
    return flow.receive(request, "inquire", reply)


def escalate(flow: PriorAuthFlow, request: PriorAuthRequest, why: str) -> None:
    """Hand the request to the coordinator, once: a visible state on the referral (auth_state
    "escalated", the reason in its event log), the prior-authorization Task on hold with the
    reason, and a coordinator task when that facility exists. No more scheduled $inquire."""
    current = flow.store.try_get(request.id) or request
    if current.escalated_at is not None:
        return
    flow.store.update(request.id, escalated_at=flow.now(), next_check_at=None)
    log.warning("pas request escalated", extra={"request": request.id,
                                                "referral_id": request.referral_id})
    try:
        referral = flow.referral_store.get(request.referral_id)
    except NotFound:
        return
    if not referral.terminal:
        state = "contact-payer" if current.status == "contact-payer" else "escalated"
        flow.act_on(referral, "amend", reason=Reason("auth-escalated", why[:200]),
                  changes={"auth_state": state})
    flow.put_task(current, "contact-payer" if current.status == "contact-payer" else "blocked",
               None, note=why)
    if flow.tasks is not None:
        flow.tasks.open(request.referral_id, TASK_KIND, why, due_at=flow.now(),
                        outcomes=list(OUTCOMES), on_outcome=OUTCOME_KIND,
                        key=f"pas-escalate:{request.id}",
                        data={"request_id": request.id, "payer": request.payer})


def close_escalation(flow: PriorAuthFlow, request: PriorAuthRequest) -> None:
    """The payer decided after all: the coordinator's task is no longer needed."""
    if flow.tasks is not None and request.escalated_at is not None:
        flow.tasks.cancel_open(request.referral_id, ACTOR_PAS, f"{request.payer} decided: "
                               f"{request.status}", kind=TASK_KIND)


def handle_coordinator_outcome(flow: PriorAuthFlow, item: WorkItem) -> None:
    """What the coordinator learnt from the payer (phone, portal), recorded on the task:
    approved or denied is applied like a payer's decision; resubmit sends a new request;
    withdrawn leaves the request as it is."""
    payload = item.payload
    request = flow.store.try_get(str((payload.get("data") or {}).get("request_id", "")))
    if request is None:
        raise InboundError(f"coordinator outcome for an unknown request: {payload}")
    outcome, who = payload.get("outcome", ""), payload.get("actor_display") or "the coordinator"
    note = f"recorded by {who}" + (f": {payload['note']}" if payload.get("note") else "")
    if outcome in ("approved", "denied"):
        flow.store.update(request.id, status=outcome, next_check_at=None,
                          last_error=f"{outcome} according to the payer, {note}"[:4000])
        flow.put_task(request, outcome, None, note=note)
        flow.move_referral(request, outcome)
    elif outcome == "resubmit":
        flow.enqueue_submit(request.referral_id, request.payer, again=True)


def _overdue(flow: PriorAuthFlow, request: PriorAuthRequest) -> str:
    payer = flow.config.try_payer(request.payer)
    expedited = is_expedited(request)
    hours = (payer.decision_window(expedited).total_seconds() / 3600) if payer else 0
    kind = "expedited" if expedited else "standard"
    return (f"no decision from {request.payer} within {hours:.0f} h ({kind} request, "
            f"CMS-0057-F) after {request.checks} $inquire: call the payer")


# --- notifications -------------------------------------------------------------------------
def handle_notification(flow: PriorAuthFlow, item: WorkItem) -> None:
    payload = item.payload
    payers = payers_for_server(flow, payload.get("server", ""))
    resources = [r for r in payload.get("resources", []) if isinstance(r, dict)]
    found = [c for r in resources for c in find_claim_responses(r)]
    if found:
        patients = {k: p for r in resources for k, p in find_patients(r).items()}
        for claim_response in found:
            apply_notified(flow, payers, claim_response, patients=patients)
        return
    if payload.get("notification_type", "event-notification") != "event-notification":
        return  # handshake / heartbeat
    foci = [e["focus"] for e in payload.get("events", []) if e.get("focus")]
    read = [read_focus(flow, payers, focus) for focus in foci]
    if not any(read):  # id-only and unreadable, or an empty event: ask
        for payer in payers:
            for undecided in flow.store.pending_for_payer(payer.name):
                inquire(flow, undecided)


def apply_notified(flow: PriorAuthFlow, payers: list[PayerConfig],
                   claim_response: dict[str, Any], reply_id: int | None = None, *,
                   patients: dict[str, dict[str, Any]] | None = None) -> PriorAuthRequest:
    """Apply a notified ClaimResponse to the request it answers among those sent to `payers`
    (every [[payers]] entry at the endpoint that notified: one intermediary often serves
    several payers). `patients`: the Patients that came with it."""
    decision = from_claim_response(claim_response, patients)
    for payer in payers:
        request = flow.match(decision, payer.name)
        if request is not None:
            flow.apply_decision(request, decision, "notification", reply_id=reply_id)
            return request
    raise InboundError("PAS notification: a ClaimResponse matches no request we sent "
                       "(request reference, identifiers, preAuthRef)")


def read_focus(flow: PriorAuthFlow, payers: list[PayerConfig], focus: str) -> bool:
    """An id-only notification: read its focus from the payer; True when it gave a decision
    we applied."""
    payer = payers[0]
    reply = flow.client(payer).read(focus)
    reply_id = flow.keep(None, payer, "read", reply)
    reading = read_reply(reply.status, *reply.parsed, operation="read")
    if reading.outcome != DECISION:
        flow.store.interpret_reply(reply_id, reading.outcome, reading.problem)
        return False
    body = reply.parsed[0]
    patients = find_patients(body) if isinstance(body, dict) else {}
    applied = [apply_notified(flow, payers, d.claim_response, reply_id, patients=patients)
               for d in reading.decisions]
    first = applied[0]
    flow.store.interpret_reply(reply_id, DECISION, f"read {focus}", request_id=first.id,
                               referral_id=first.referral_id)
    return True


def payers_for_server(flow: PriorAuthFlow, server: str) -> list[PayerConfig]:
    """The [[payers]] entries whose endpoint is `server` (several payers may share one)."""
    found = [payer for payer in flow.config.payers
             if payer.base_url.rstrip("/") == server.rstrip("/")]
    if not found:
        raise InboundError(f"PAS notification from {server!r}, which is no configured payer")
    return found
