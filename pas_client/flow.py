"""The prior-authorization flow: build, check, submit, keep every reply raw and read it, apply
decisions to the referral, update and cancel. Following undecided requests (notifications,
scheduled $inquire, escalation) is in followup.py.

Work kinds: "pas.submit" {"referral_id", "payer"} (and {"request_id"} for an update or cancel
already built), "pas.notification" (enqueued by the subscriptions adapter), "pas.inquire"
{"request_id"} and the timer "pas.follow-up" (followup.py)."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pas_client import followup
from pas_client.bundle import build_request_bundle
from pas_client.client import PayerClient, Reply, raise_for_retry
from pas_client.config import PasConfig, PayerConfig
from pas_client.conformance import Finding, check_bundle
from pas_client.inputs import gather_inputs, server_of
from pas_client.reply import DECISION, EMPTY, REJECTED, UNINTERPRETABLE, Reading, read_reply
from pas_client.response import (
    Decision,
    contradiction,
    item_from_json,
    merge_items,
    names_claim,
    names_patient,
    patient_mismatch,
    stated_reasons,
    unknown_sequences,
)
from pas_client.store import FINAL, UNDECIDED, PriorAuthRequest, PriorAuthStore
from pas_client.subscription import build_subscription
from pas_client.update import build_update_bundle
from referrals.errors import IllegalTransition, InboundError, NotFound, PeerError
from referrals.ids import short_id
from referrals.model import Actor, Command, Link, Reason, Referral, Stage
from referrals.store.work import WorkItem

log = logging.getLogger("refloop.pas")
ACTOR = Actor("Device/refloop-pas", "Refloop prior authorization", "system")
#: a decision's overall state -> the request's status
STATUS = {"pending": "pended", "approved": "approved", "modified": "modified",
          "partially-approved": "partially-approved", "no-auth-required": "no-auth-required",
          "denied": "denied", "contact-payer": "contact-payer", "partial": "partial",
          "cancelled": "cancelled", "error": "rejected", "unknown": "unknown"}
#: the request's status -> the prior-authorization Task's status
TASK_STATUS = {"sending": "requested", "submitted": "in-progress", "pended": "in-progress",
               "approved": "completed", "modified": "completed",
               "partially-approved": "completed", "no-auth-required": "completed",
               "denied": "rejected", "contact-payer": "on-hold", "partial": "in-progress",
               "cancelled": "cancelled", "error": "failed", "rejected": "failed",
               "unknown": "in-progress", "blocked": "on-hold"}
#: statuses that let the referral go on (the service is authorized, maybe in another form)
GRANTED = frozenset({"approved", "modified", "partially-approved", "no-auth-required"})
#: a request in one of these is live: another submit for the same referral and payer is not
#: sent (an update, a cancel, or the coordinator's resubmit is the way on)
LIVE = GRANTED | UNDECIDED | {"sending", "contact-payer", "partial"}


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class PriorAuthFlow:
    config: PasConfig
    store: PriorAuthStore
    referrals: Any   # referrals.service.ReferralService
    referral_store: Any  # referrals.store.referrals.ReferralStore
    resources: Any   # referrals.store.resources.ResourceStore
    work: Any        # referrals.store.work.WorkQueue
    client_for: Callable[[PayerConfig], PayerClient] = PayerClient
    #: the subscriptions adapter's open_hook/attach, when that adapter is wired
    hooks: Any = None
    #: the core's coordinator tasks (open(...)), when that facility exists
    tasks: Any = None
    #: the core's quarantine (put(...)): a ClaimResponse about another patient is kept there
    quarantine: Any = None
    now: Callable[[], datetime] = utc_now
    #: one client per payer, so its access token is cached across work items
    _clients: dict[PayerConfig, PayerClient] = field(default_factory=dict, repr=False)
    _clients_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def client(self, payer: PayerConfig) -> PayerClient:
        with self._clients_lock:
            if payer not in self._clients:
                self._clients[payer] = self.client_for(payer)
            return self._clients[payer]

    # --- submit ---------------------------------------------------------------------------
    def enqueue_submit(self, referral_id: str, payer: str, *, again: bool = False) -> None:
        """Queue a request; `again` (the coordinator's "resubmit") sends a new one even
        while an earlier request is live."""
        payload: dict[str, Any] = {"referral_id": referral_id, "payer": payer}
        if again:
            payload["again"] = True
        self.work.enqueue("pas.submit", payload,
                          key=f"pas.submit:{referral_id}:{payer}:{uuid.uuid4().hex[:8]}")

    def live_request(self, referral_id: str, payer: str) -> PriorAuthRequest | None:
        """The referral's request to `payer` that is being sent, waits for the payer or was
        granted (the latest of its chain): a second submit would make the payer decide the
        same order twice."""
        latest: dict[str, PriorAuthRequest] = {}
        for request in self.store.for_referral(referral_id, payer):
            latest[request.chain_id] = request
        live = [r for r in latest.values() if r.status in LIVE]
        return live[-1] if live else None

    def prepare(self, referral: Referral, payer: PayerConfig, *,
                unless_live: bool = False) -> tuple[PriorAuthRequest, bool]:
        """Build, check and store the request; (request, sendable). `unless_live`: when the
        referral has a live request to the payer by then (another worker's), that one."""
        server = server_of(referral.source_key)
        gathered = gather_inputs(referral.id, referral.priority, referral.service_request,
                                 referral.patient, lambda t, i: self.resources.try_get(
                                     t, i, server=server), payer=(payer.name, payer.payer_id))
        if isinstance(gathered, list):
            return self._blocked(referral.id, payer.name, gathered), False
        checked = self.store.coverage(referral.id) or {}
        if checked.get("payer") == payer.name:
            gathered.coverage_information = list(
                (checked["detail"].get("crd") or {}).get("coverage_information", []))
        built = build_request_bundle(gathered, payer, self.config, scope=server)
        findings = [*built.findings, *check_bundle(built.bundle, payer.version)]
        sendable = not any(f.severity == "error" for f in findings)
        request_id = str(uuid.uuid4())
        request = new_request(request_id, referral.id, payer.name, "submit", request_id, None, 1,
                              built.bundle, built.bundle_identifier, built.claim_identifier,
                              "sending" if sendable else "blocked", findings)
        if sendable and unless_live:
            return self.store.add_unless_live(request, LIVE), sendable
        self.store.add(request)
        return request, sendable

    def _blocked(self, referral_id: str, payer: str,
                 findings: list[Finding]) -> PriorAuthRequest:
        request_id = str(uuid.uuid4())
        request = new_request(request_id, referral_id, payer, "submit", request_id, None, 1,
                              {}, f"blocked-{request_id}", "", "blocked", findings)
        self.store.add(request)
        return request

    def handle_submit(self, item: WorkItem) -> None:
        payload = item.payload
        request: PriorAuthRequest | None = self.store.try_get(payload["request_id"]) \
            if payload.get("request_id") else self._open_request(payload)
        if request is None:
            raise InboundError(f"pas.submit: no request {payload.get('request_id')}")
        if request.status != "sending" or not self.store.claim_send(request.id,
                                                                    item.idempotency_key):
            log.info("pas request not sent", extra={"request": request.id,
                                                   "status": request.status})
            return  # decided, blocked, or being sent by another work item
        payer = self.config.payer(request.payer)
        try:
            self.ensure_subscription(payer)
            reply = self.client(payer).send_submit(request.bundle)
            self.receive(request, "submit", reply)
        except PeerError as exc:  # the work item retries with the same bytes...
            if not exc.retryable or item.attempts >= item.max_attempts:
                self.unsent(request, str(exc))  # ...and after the last try it is followed
            raise

    def unsent(self, request: PriorAuthRequest, why: str) -> None:
        """No answer from the payer after the last attempt: the request is in error and
        followed with $inquire until its deadline (the payer may have received it), then
        escalated; the work item goes to quarantine with the same reason."""
        self.store.update(request.id, status="error", last_error=(
            f"no answer from the payer after the last attempt ({why}); an $inquire is "
            "scheduled")[:4000])
        current = self.store.try_get(request.id) or request
        self.schedule_follow_up(current, soon=True)
        self.put_task(current, "error", None, note=current.last_error)
        self.move_referral(current, "error")

    def _open_request(self, payload: dict[str, Any]) -> PriorAuthRequest:
        """The request this work item sends: the unsent one it built before a crash, or new.
        An unknown referral is bad input (no retries); an unknown payer is a blocked request
        that says which [[payers]] entry is missing."""
        try:
            referral = self.referral_store.get(payload["referral_id"])
        except NotFound as exc:
            raise InboundError(f"pas.submit: no referral {payload['referral_id']}") from exc
        payer = self.config.try_payer(payload.get("payer") or referral.payer)
        if payer is None:
            known = ", ".join(p.name for p in self.config.payers) or "none"
            return self._blocked(referral.id, payload.get("payer") or referral.payer or "-", [
                Finding("error", "payer", "input", f"no [[payers]] entry named "
                        f"{payload.get('payer') or referral.payer!r} (configured: {known}); "
                        "add one with name, base_url and version, or choose a configured "
                        "payer")])
        for existing in reversed(self.store.for_referral(referral.id, payer.name)):
            if existing.status == "sending" and existing.kind == "submit":
                return existing
        live = None if payload.get("again") else self.live_request(referral.id, payer.name)
        if live is not None:
            return live  # not sent again: the payer has it (or is getting it)
        request, _ = self.prepare(referral, payer, unless_live=not payload.get("again"))
        return request

    # --- replies --------------------------------------------------------------------------
    def keep(self, request: PriorAuthRequest | None, payer: PayerConfig, operation: str,
             reply: Reply, *, referral_id: str | None = None) -> int:
        """Store the reply raw (status, headers, bytes), then raise for a retry when it asks
        for one (5xx, 401 to our token). Returns the stored reply's id."""
        reply_id = self.store.add_reply(
            payer=payer.name, operation=operation, status=reply.status, headers=reply.headers,
            body=reply.raw, request_id=request.id if request else None,
            referral_id=request.referral_id if request else referral_id)
        try:
            raise_for_retry(payer.name, operation, reply, self.client(payer).token is not None)
        except Exception:
            self.store.interpret_reply(reply_id, "retry", f"HTTP {reply.status}: sent again")
            raise
        return reply_id

    def receive(self, request: PriorAuthRequest, operation: str, reply: Reply) -> Reading:
        """Keep a reply to `request`'s $submit or $inquire raw, then read and apply it."""
        payer = self.config.payer(request.payer)
        reply_id = self.keep(request, payer, operation, reply)
        reading = read_reply(reply.status, *reply.parsed, operation=operation)
        self.store.interpret_reply(reply_id, reading.outcome,
                                   "; ".join(filter(None, [reading.problem, *reading.notes])))
        if reading.outcome == REJECTED and operation == "submit":
            self._rejected(request, reading.problem, reply.status, reply_id)
        elif reading.outcome == DECISION:
            if operation == "submit" and request.status == "sending":
                self.store.update(request.id, status="submitted")
            decisions, problem = self._decisions_for(request, reading.decisions, operation)
            if problem:
                self.store.interpret_reply(reply_id, UNINTERPRETABLE, problem)
                self.unreadable(request, reply_id, problem)
            for decision in decisions:
                self.apply_decision(request, decision, operation, reply.status, reply_id)
        elif reading.outcome != EMPTY and (operation == "submit" or reading.outcome != REJECTED):
            self.unreadable(request, reply_id, reading.problem)
        return reading

    def _decisions_for(self, request: PriorAuthRequest, decisions: tuple[Decision, ...],
                       operation: str) -> tuple[list[Decision], str]:
        """The decisions that answer `request`, or why none can be used. A $submit reply
        answers it, unless its ClaimResponses name another claim or contradict each other;
        of an $inquire reply (which may list every request of the patient) those that name
        it, or the only one when none names anything."""
        if operation == "submit":
            return submit_decisions(request, decisions)
        named = [d for d in decisions if self._names(d, request)]
        anonymous = [d for d in decisions if not (d.request_reference or d.request_identifiers
                                                  or d.identifiers or d.pre_auth_ref)]
        return named or (anonymous if len(decisions) == 1 else []), ""

    def _names(self, decision: Decision, request: PriorAuthRequest) -> bool:
        found = self.match(decision, request.payer)
        return found is not None and found.chain_id == request.chain_id

    def match(self, decision: Decision, payer: str) -> PriorAuthRequest | None:
        matched: PriorAuthRequest | None = self.store.match(
            full_urls=[decision.request_reference] if decision.request_reference else [],
            identifiers=[v for _, v in (*decision.request_identifiers, *decision.identifiers)],
            auth_numbers=[decision.pre_auth_ref] if decision.pre_auth_ref else [],
            payer=payer)
        return matched

    def _rejected(self, request: PriorAuthRequest, why: str, http_status: int,
                  reply_id: int) -> None:
        """The payer refused the request (a 4xx it does not ask us to retry): the request, its
        Task and, for a first submission, the referral (auth state `rejected`, the reason in
        its event log) say why and what to do; nothing is sent again by itself."""
        again = "request prior authorization again" if request.kind == "submit" else \
            f"send the {request.kind} again"
        refused = f"{request.payer} refused the request (HTTP {http_status})"
        message = (f"{refused}: {why.rstrip('.')}. Correct what it names and {again} (the "
                   f"reply: `refloop pas reply {reply_id}`)")
        self.store.update(request.id, status="rejected", last_error=message[:4000],
                          next_check_at=None)
        self.put_task(request, "rejected", None, note=message)
        if request.kind == "submit":
            self.move_referral(request, "rejected", reason=Reason("auth-rejected", (
                f"{refused}: correct what it names and {again}; {why}")[:200]))
        log.warning("pas request rejected", extra={"request": request.id})

    def unreadable(self, request: PriorAuthRequest, reply_id: int, problem: str) -> None:
        """A reply Refloop cannot interpret: the request is in error (unless it was decided
        already) with the reply kept and named, and an $inquire is scheduled."""
        current = self.store.try_get(request.id) or request
        if current.status in FINAL:
            return  # a garbled later message never undoes a decision
        message = (f"the payer's reply (#{reply_id}) could not be interpreted: {problem}; an "
                   "$inquire is scheduled (see `refloop pas reply "
                   f"{reply_id}`)")
        self.store.update(request.id, status="error", last_error=message[:4000])
        self.schedule_follow_up(self.store.try_get(request.id) or current, soon=True)
        self.put_task(current, "error", None, note=message)
        self.move_referral(current, "error")

    # --- decisions --------------------------------------------------------------------------
    def apply_decision(self, request: PriorAuthRequest, decision: Decision, source: str,
                       http_status: int | None = None, reply_id: int | None = None) -> bool:
        """Apply a decision once; older decisions (by created) than the applied one are kept
        but not applied. A decision about items the request does not contain, or about another
        patient (also quarantined), is not applied: the request is in error and an $inquire is
        scheduled. True when it changed things."""
        current = self.store.try_get(request.id)
        assert current is not None
        strange = unknown_sequences(decision, current.item_sequences())
        patient = other_patient(current, decision)
        problem = (f"it decides item sequences {strange}, which request {current.id[:8]} does "
                   f"not contain (it has {sorted(current.item_sequences())})" if strange
                   else patient or contradiction(decision))
        if problem:
            if patient:
                self.keep_aside(current, decision, patient)
            self.store.add_response(request.id, source, decision.claim_response, "mismatch",
                                    http_status)
            if reply_id:
                self.store.interpret_reply(reply_id, UNINTERPRETABLE, problem)
            self.unreadable(current, reply_id or 0, problem)
            return False
        earlier = [item_from_json(i) for i in (current.decision or {}).get("items", [])]
        decision = merge_items(decision, earlier)
        new = self.store.add_response(request.id, source, decision.claim_response,
                                      decision.overall, http_status)
        if not new or (current.decided_at and decision.created
                       and decision.created < current.decided_at):
            return False
        status = STATUS[decision.overall]
        refused, reason = refusal(current, status, decision, reply_id)
        self.store.update(request.id, status=status, decision=decision.to_json(),
                          auth_number=decision.auth_number or (
                              current.auth_number if status in GRANTED else ""),
                          decided_at=decision.created or current.decided_at,
                          last_error=(refused or (decision.summary() if decision.errors
                                                  else ""))[:4000])
        updated = self.store.try_get(request.id) or current
        if status in UNDECIDED:
            self.schedule_follow_up(updated)
        else:
            self.store.update(request.id, next_check_at=None)
            if status != "contact-payer":
                followup.close_escalation(self, self.store.try_get(request.id) or updated)
        self.put_task(current, status, decision, note=refused)
        self.move_referral(current, status, decision, reason)
        if status == "contact-payer":
            self.escalate(updated, f"{request.payer} asks to be contacted about this prior "
                          "authorization (X12 306 CT): call the payer or use its portal")
        return True

    def keep_aside(self, request: PriorAuthRequest, decision: Decision, problem: str) -> None:
        """A ClaimResponse about another patient goes to quarantine with the reason."""
        if self.quarantine is None:
            return
        self.quarantine.put(origin="pas", kind="pas.claim-response", reason=(
            f"a ClaimResponse from {request.payer} names request {request.id[:8]} (referral "
            f"{short_id(request.referral_id)}) but {problem}")[:2000],
            original=json.dumps(decision.claim_response).encode(),
            content_type="application/fhir+json")
        log.warning("pas: a ClaimResponse about another patient was not applied",
                    extra={"request": request.id, "referral_id": request.referral_id})

    def move_referral(self, request: PriorAuthRequest, status: str,
                       decision: Decision | None = None, reason: Reason | None = None) -> None:
        referral = self.referral_store.get(request.referral_id)
        link = Link("prior-authorization", f"Task/{request.task_id}", request.payer)
        if referral.stage in (Stage.ACCEPTED, Stage.COVERAGE_CHECK):
            referral = self.act_on(referral, "request-authorization", changes={
                "payer": request.payer, "auth_state": "submitted", "add_inputs": [link]})
        said = stated_reasons(decision) if decision else ""
        if referral.stage != Stage.AUTH_PENDING:
            if status == "denied" and referral.auth_state in GRANTED and not referral.terminal:
                # the payer takes back what it granted: outreach and scheduling must stop
                self.act_on(referral, "hold", reason=Reason("auth-denied", (
                    f"{request.payer} now denies the prior authorization it had granted "
                    f"({referral.auth_state})" + (f": {said}" if said else ""))[:200]),
                    changes={"auth_state": "denied"})
            return
        if status in GRANTED:
            self.act_on(referral, "authorize", changes={"auth_state": status})
        elif status == "denied":
            self.act_on(referral, "hold", reason=reason or Reason("auth-denied", (
                f"{request.payer} denied prior authorization" +
                (f" ({said})" if said else ""))[:200]), changes={"auth_state": "denied"})
        elif referral.auth_state != status:
            self.act_on(referral, "amend", reason=reason, changes={"auth_state": status})

    def act_on(self, referral: Referral, action: str, reason: Reason | None = None,
             changes: dict[str, Any] | None = None) -> Referral:
        try:
            moved: Referral = self.referrals.act(referral.id, Command(
                action, actor=ACTOR, reason=reason, source="pas", changes=changes or {}))
            return moved
        except IllegalTransition as exc:
            log.info("pas: referral not moved", extra={"referral_id": referral.id,
                                                       "action": action, "why": str(exc)})
            return referral

    def put_task(self, request: PriorAuthRequest, status: str, decision: Decision | None,
              note: str = "") -> None:
        """The prior authorization as a child Task of the referral's Task."""
        claim = request.bundle_json()["entry"][0]["resource"] if request.bundle else None
        if claim is not None:
            self.resources.put(claim, server="local")
        task: dict[str, Any] = {
            "resourceType": "Task", "id": request.task_id, "status": TASK_STATUS[status],
            "intent": "order", "partOf": [{"reference": f"Task/{request.referral_id}"}],
            "code": {"text": "Prior authorization (Da Vinci PAS)"},
            "businessStatus": {"text": decision.summary() if decision else status},
            "owner": {"display": request.payer},
            "lastModified": self.now().isoformat(timespec="seconds"),
        }
        if note:
            task["statusReason"] = {"text": note[:1000]}
        if claim is not None:
            task["focus"] = {"reference": f"Claim/{claim['id']}"}
            task["for"] = {"reference": self.referral_store.get(request.referral_id).patient}
        if decision and decision.auth_number:
            task["output"] = [{"type": {"text": "authorization-number"},
                               "valueString": decision.auth_number}]
        self.resources.put(task, server="local")

    def ensure_subscription(self, payer: PayerConfig) -> None:
        """One organisation-level Subscription per payer, created before the first request."""
        if self.hooks is None or not payer.subscribe or self.store.subscription(payer.name):
            return
        hook = self.hooks.open_hook(server=payer.base_url, purpose="pas",
                                    deliver_kind="pas.notification")
        reply = self.client(payer).send_subscription(
            build_subscription(payer, hook.url, hook.header))
        reply_id = self.keep(None, payer, "subscription", reply)
        if reply.rejected or not reply.body.get("id"):
            self.store.interpret_reply(reply_id, "refused", reply.outcome_text())
            log.warning("pas subscription refused", extra={"payer": payer.name,
                                                           "status": reply.status})
            return
        self.store.interpret_reply(reply_id, "subscribed", str(reply.body["id"]))
        self.hooks.attach(hook.id, reply.body["id"])
        self.store.save_subscription(payer.name, reply.body["id"], hook.id)

    # --- following undecided requests (followup.py) -------------------------------------
    def schedule_follow_up(self, request: PriorAuthRequest, *, soon: bool = False) -> None:
        followup.schedule(self, request, soon=soon)

    def escalate(self, request: PriorAuthRequest, why: str) -> None:
        followup.escalate(self, request, why)

    def handle_notification(self, item: WorkItem) -> None:
        followup.handle_notification(self, item)

    def handle_inquire(self, item: WorkItem) -> None:
        followup.handle_inquire(self, item)

    def handle_follow_up(self, _item: WorkItem) -> None:
        followup.follow_up_due(self)

    def handle_coordinator_outcome(self, item: WorkItem) -> None:
        followup.handle_coordinator_outcome(self, item)

    def inquire(self, request: PriorAuthRequest) -> Reading:
        return followup.inquire(self, request)

    # --- update and cancel ---------------------------------------------------------------
    def update(self, chain_id: str, *, cancel_items: set[int] | None = None,
               add_items: list[dict[str, Any]] | None = None,
               cancel_all: bool = False) -> PriorAuthRequest:
        """Build, check and enqueue a Claim Update of the chain's latest request."""
        prior: PriorAuthRequest | None = self.store.latest_in_chain(chain_id)
        if prior is None or not prior.bundle:
            raise InboundError(f"no prior authorization {chain_id} to update")
        if prior.status == "denied":
            raise InboundError("a denied prior authorization cannot be updated; submit a new "
                               "request (an appeal)")
        bundle, bundle_id, claim_id = build_update_bundle(
            prior.bundle_json(), cancel_items=cancel_items, add_items=add_items,
            cancel_all=cancel_all)
        payer = self.config.payer(prior.payer)
        findings = check_bundle(bundle, payer.version)
        sendable = not any(f.severity == "error" for f in findings)
        request = new_request(str(uuid.uuid4()), prior.referral_id, prior.payer,
                              "cancel" if cancel_all else "update", chain_id, prior.id,
                              prior.version_no + 1, bundle, bundle_id, claim_id,
                              "sending" if sendable else "blocked", findings)
        self.store.add(request)
        if sendable:
            self.work.enqueue("pas.submit", {"request_id": request.id, "referral_id":
                                             prior.referral_id, "payer": prior.payer},
                              key=f"pas.submit:{request.id}")
        return request


def new_request(request_id: str, referral_id: str, payer: str, kind: str, chain_id: str,
                prior_id: str | None, version_no: int, bundle: dict[str, Any],
                bundle_identifier: str, claim_identifier: str, status: str,
                findings: list[Finding]) -> PriorAuthRequest:
    now = datetime.now(UTC)
    body = json.dumps(bundle, separators=(",", ":")).encode() if bundle else b""
    full_url = bundle["entry"][0]["fullUrl"] if bundle else ""
    return PriorAuthRequest(
        id=request_id, referral_id=referral_id, payer=payer, kind=kind, chain_id=chain_id,
        prior_id=prior_id, version_no=version_no, bundle_identifier=bundle_identifier,
        claim_identifier=claim_identifier, claim_full_url=full_url, status=status,
        decision=None, auth_number="", decided_at="", bundle=body,
        findings=[f.to_json() for f in findings], last_error="", created_at=now,
        updated_at=now)


def submit_decisions(request: PriorAuthRequest, decisions: tuple[Decision, ...]
                     ) -> tuple[list[Decision], str]:
    """The decision a $submit reply gives `request`, or why it cannot be used: every
    ClaimResponse names another claim (a payer that mixed up its replies), or those about
    ours contradict each other (or their own header)."""
    claim = request.bundle_json()["entry"][0]["resource"] if request.bundle else {}
    about = [(d, names_claim(d, request.claim_full_url, str(claim.get("id", "")),
                             request.claim_identifier)) for d in decisions]
    ours = [d for d, named in about if named is not False]
    if not ours:
        named = ", ".join(sorted({d.request_reference for d in decisions
                                  if d.request_reference}
                                 | {v for d in decisions for _, v in d.request_identifiers}))
        return [], (f"it answers another claim ({named or 'unnamed'}), not ours "
                    f"({request.claim_full_url}, identifier {request.claim_identifier}); not "
                    "applied")
    conflicts = {d.summary() for d in ours}
    if len(conflicts) > 1:
        return [], ("it holds ClaimResponses for our claim that contradict each other ("
                    + " / ".join(sorted(conflicts)) + "); none applied")
    return ours[:1], ""


def refusal(request: PriorAuthRequest, status: str, decision: Decision,
            reply_id: int | None) -> tuple[str, Reason | None]:
    """What the request and its Task say (the message) and the referral's event records (the
    reason) when the payer's ClaimResponse denies the request or answers with errors instead
    of a decision: the payer's error codes, review reason codes and disposition, as for a
    refusal by HTTP 4xx. ("", None) for any other status."""
    said = stated_reasons(decision)
    if status == "denied":
        text = f"{request.payer} denied prior authorization" + (f" ({said})" if said else "")
        return text, Reason("auth-denied", text[:200])
    if status != "rejected":
        return "", None
    again = "request prior authorization again" if request.kind == "submit" else \
        f"send the {request.kind} again"
    refused = f"{request.payer} answered with errors instead of a decision"
    reply = f" (the reply: `refloop pas reply {reply_id}`)" if reply_id else ""
    event = f"{refused}: {said or 'none stated'}"
    guidance = f"; correct what it names and {again}"
    return (f"{event}. Correct what it names and {again}{reply}",
            Reason("auth-rejected", event + guidance if len(event + guidance) <= 200
                   else event[:199] + "…"))


def other_patient(request: PriorAuthRequest, decision: Decision) -> str:
    """Why `decision` cannot be about `request`'s patient ("" when it is)."""
    if not request.bundle:
        return ""
    bundle = request.bundle_json()
    reference = str(bundle["entry"][0]["resource"].get("patient", {}).get("reference", ""))
    patient: dict[str, Any] = next(
        (e["resource"] for e in bundle["entry"] if e.get("fullUrl") == reference), {})
    if names_patient(decision, reference, patient):
        mismatch = patient_mismatch(decision, patient)
        if not mismatch:
            return ""
        held = decision.patient_reference or "the one it holds"
        return (f"its Patient ({held}) is named as the request's but has another {mismatch} "
                f"than the request's Patient ({reference}): a patient mismatch; not applied")
    if not decision.patient_reference and not decision.patient_identifiers:
        return (f"it names no patient, so nothing shows it is about the request's ({reference})"
                "; not applied")
    theirs = decision.patient_reference or "a patient named by identifier only"
    return (f"it is about another patient ({theirs}), not the request's ({reference}); not "
            "applied")


def is_final(request: PriorAuthRequest) -> bool:
    return request.status in FINAL
