"""The prior-authorization flow: build, check, submit, apply decisions to the referral, follow
pended requests (notifications, $inquire), update and cancel.

Work kinds: "pas.submit" {"referral_id", "payer"} (and {"request_id"} for an update or cancel
already built), "pas.notification" (enqueued by the subscriptions adapter)."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pas_client.bundle import build_request_bundle
from pas_client.client import PayerClient, Reply
from pas_client.config import PasConfig, PayerConfig
from pas_client.conformance import Finding, check_bundle
from pas_client.inputs import gather_inputs, server_of
from pas_client.response import (
    Decision,
    ResponseError,
    from_claim_response,
    parse_inquire_reply,
    parse_response_bundle,
)
from pas_client.store import FINAL, PriorAuthRequest, PriorAuthStore
from pas_client.subscription import build_subscription
from pas_client.update import build_inquiry_bundle, build_update_bundle
from referrals.errors import IllegalTransition, InboundError
from referrals.model import Actor, Command, Link, Reason, Referral, Stage
from referrals.store.work import WorkItem

log = logging.getLogger("refloop.pas")
ACTOR = Actor("Device/refloop-pas", "Refloop prior authorization", "system")
STATUS = {"pending": "pended", "approved": "approved", "denied": "denied",
          "partial": "partial", "cancelled": "cancelled", "error": "error",
          "unknown": "unknown"}
TASK_STATUS = {"sending": "requested", "submitted": "in-progress", "pended": "in-progress",
               "approved": "completed", "denied": "rejected", "partial": "in-progress",
               "cancelled": "cancelled", "error": "failed", "rejected": "failed",
               "unknown": "in-progress", "blocked": "on-hold"}


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
    #: one client per payer, so its access token is cached across work items
    _clients: dict[PayerConfig, PayerClient] = field(default_factory=dict, repr=False)
    _clients_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def client(self, payer: PayerConfig) -> PayerClient:
        with self._clients_lock:
            if payer not in self._clients:
                self._clients[payer] = self.client_for(payer)
            return self._clients[payer]

    # --- submit ---------------------------------------------------------------------------
    def enqueue_submit(self, referral_id: str, payer: str) -> None:
        self.work.enqueue("pas.submit", {"referral_id": referral_id, "payer": payer},
                          key=f"pas.submit:{referral_id}:{payer}:{uuid.uuid4().hex[:8]}")

    def prepare(self, referral: Referral, payer: PayerConfig) -> tuple[PriorAuthRequest, bool]:
        """Build, check and store the request; (request, sendable)."""
        server = server_of(referral.source_key)
        gathered = gather_inputs(referral.id, referral.priority, referral.service_request,
                                 referral.patient, lambda t, i: self.resources.try_get(
                                     t, i, server=server))
        if isinstance(gathered, list):
            return self._blocked(referral, payer, gathered), False
        built = build_request_bundle(gathered, payer, self.config, scope=server)
        findings = [*built.findings, *check_bundle(built.bundle, payer.version)]
        sendable = not any(f.severity == "error" for f in findings)
        request_id = str(uuid.uuid4())
        request = new_request(request_id, referral.id, payer.name, "submit", request_id, None, 1,
                              built.bundle, built.bundle_identifier, built.claim_identifier,
                              "sending" if sendable else "blocked", findings)
        self.store.add(request)
        return request, sendable

    def _blocked(self, referral: Referral, payer: PayerConfig,
                 findings: list[Finding]) -> PriorAuthRequest:
        request_id = str(uuid.uuid4())
        request = new_request(request_id, referral.id, payer.name, "submit", request_id, None, 1,
                              {}, f"blocked-{request_id}", "", "blocked", findings)
        self.store.add(request)
        return request

    def handle_submit(self, item: WorkItem) -> None:
        payload = item.payload
        request: PriorAuthRequest | None = self.store.try_get(payload["request_id"]) \
            if payload.get("request_id") else self._open_request(payload)
        if request is None:
            raise InboundError(f"pas.submit: no request {payload.get('request_id')}")
        if request.status != "sending":
            log.info("pas request not sent", extra={"request": request.id,
                                                   "status": request.status})
            return
        payer = self.config.payer(request.payer)
        self.ensure_subscription(payer)
        reply = self.client(payer).send_submit(request.bundle)  # PeerError -> retry
        self.apply_reply(request, reply)

    def _open_request(self, payload: dict[str, Any]) -> PriorAuthRequest | None:
        """The request this work item sends: the unsent one it built before a crash, or new."""
        referral = self.referral_store.get(payload["referral_id"])
        payer = self.config.payer(payload["payer"])
        for existing in reversed(self.store.for_referral(referral.id, payer.name)):
            if existing.status == "sending" and existing.kind == "submit":
                return existing
        request, _ = self.prepare(referral, payer)
        return request

    def apply_reply(self, request: PriorAuthRequest, reply: Reply) -> None:
        if reply.rejected:
            self.store.add_response(request.id, "http", reply.body or {"status": reply.status},
                                    "rejected", reply.status)
            self.store.update(request.id, status="rejected", last_error=reply.outcome_text())
            self._task(request, "rejected", None)
            log.warning("pas request rejected", extra={"request": request.id,
                                                       "status": reply.status})
            return
        try:
            decision = parse_response_bundle(reply.body)
        except ResponseError as exc:
            self.store.update(request.id, status="error", last_error=f"protocol: {exc}")
            self._task(request, "error", None)
            return
        self.store.update(request.id, status="submitted")
        self.apply_decision(request, decision, "submit", reply.status)

    # --- decisions --------------------------------------------------------------------------
    def apply_decision(self, request: PriorAuthRequest, decision: Decision, source: str,
                       http_status: int | None = None) -> bool:
        """Apply a decision once; older decisions (by created) than the applied one are kept
        but not applied. Returns True when it changed the request."""
        new = self.store.add_response(request.id, source, decision.claim_response,
                                      decision.overall, http_status)
        current = self.store.try_get(request.id)
        assert current is not None
        if not new or (current.decided_at and decision.created
                       and decision.created < current.decided_at):
            return False
        status = STATUS[decision.overall]
        self.store.update(request.id, status=status, decision=decision.to_json(),
                          auth_number=decision.auth_number or current.auth_number,
                          decided_at=decision.created or current.decided_at,
                          last_error=decision.summary() if decision.errors else "")
        self._task(current, status, decision)
        self._move_referral(current, decision)
        return True

    def _move_referral(self, request: PriorAuthRequest, decision: Decision) -> None:
        referral = self.referral_store.get(request.referral_id)
        link = Link("prior-authorization", f"Task/{request.task_id}", request.payer)
        if referral.stage in (Stage.ACCEPTED, Stage.COVERAGE_CHECK):
            referral = self._act(referral, "request-authorization", changes={
                "payer": request.payer, "auth_state": "submitted", "add_inputs": [link]})
        if referral.stage != Stage.AUTH_PENDING:
            return
        overall = decision.overall
        if overall == "approved":
            self._act(referral, "authorize", changes={"auth_state": "approved"})
        elif overall == "denied":
            reasons = ", ".join(r for i in decision.items for r in i.reasons)
            self._act(referral, "hold", reason=Reason("auth-denied", (
                f"{request.payer} denied prior authorization" +
                (f" (reasons {reasons})" if reasons else ""))[:200]),
                changes={"auth_state": "denied"})
        elif referral.auth_state != STATUS[overall]:
            self._act(referral, "amend", changes={"auth_state": STATUS[overall]})

    def _act(self, referral: Referral, action: str, reason: Reason | None = None,
             changes: dict[str, Any] | None = None) -> Referral:
        try:
            moved: Referral = self.referrals.act(referral.id, Command(
                action, actor=ACTOR, reason=reason, source="pas", changes=changes or {}))
            return moved
        except IllegalTransition as exc:
            log.info("pas: referral not moved", extra={"referral_id": referral.id,
                                                       "action": action, "why": str(exc)})
            return referral

    def _task(self, request: PriorAuthRequest, status: str, decision: Decision | None) -> None:
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
            "lastModified": datetime.now(UTC).isoformat(timespec="seconds"),
        }
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
        if reply.rejected or not reply.body.get("id"):
            log.warning("pas subscription refused", extra={"payer": payer.name,
                                                           "status": reply.status})
            return
        self.hooks.attach(hook.id, reply.body["id"])
        self.store.save_subscription(payer.name, reply.body["id"], hook.id)

    # --- pended: notifications and $inquire ----------------------------------------------
    def handle_notification(self, item: WorkItem) -> None:
        payload = item.payload
        payer = self._payer_for_server(payload.get("server", ""))
        responses = [r for r in payload.get("resources", [])
                     if r.get("resourceType") == "ClaimResponse"]
        if not responses:
            if payload.get("notification_type", "event-notification") != "event-notification":
                return  # handshake / heartbeat
            for pended in self.store.pending_for_payer(payer.name):  # id-only: ask
                self.inquire(pended)
            return
        for claim_response in responses:
            decision = from_claim_response(claim_response)
            request: PriorAuthRequest | None = self.store.match(
                full_urls=[decision.request_reference] if decision.request_reference else [],
                identifiers=[v for _, v in (*decision.request_identifiers,
                                            *decision.identifiers)],
                auth_numbers=[decision.pre_auth_ref] if decision.pre_auth_ref else [],
                payer=payer.name)
            if request is None:
                raise InboundError("PAS notification: a ClaimResponse matches no request we "
                                   "sent (request reference, identifiers, preAuthRef)")
            self.apply_decision(request, decision, "notification")

    def _payer_for_server(self, server: str) -> PayerConfig:
        for payer in self.config.payers:
            if payer.base_url.rstrip("/") == server.rstrip("/"):
                return payer
        raise InboundError(f"PAS notification from {server!r}, which is no configured payer")

    def inquire(self, request: PriorAuthRequest) -> list[Decision]:
        payer = self.config.payer(request.payer)
        body = json.dumps(build_inquiry_bundle(request.bundle_json(), request.auth_number))
        reply = self.client(payer).send_inquire(body.encode())
        if reply.rejected:
            raise InboundError(f"$inquire refused by {payer.name}: {reply.outcome_text()}")
        decisions = parse_inquire_reply(reply.body)
        for decision in decisions:
            self.apply_decision(request, decision, "inquire", reply.status)
        return decisions

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


def is_final(request: PriorAuthRequest) -> bool:
    return request.status in FINAL
