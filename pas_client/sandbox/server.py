"""The payer sandbox's HTTP server (Flask), bound to 127.0.0.1. A FAKE PAYER for the demo and
tests: $submit, $inquire, Subscription create, an optional SMART Backend Services token endpoint
(and bearer tokens required on the PAS operations), optional TLS with client certificates, and
test controls under /sandbox/."""

from __future__ import annotations

import hashlib
import json
import logging
import ssl
import threading
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, request
from werkzeug.serving import make_server

from pas_client.sandbox.coverage import (
    SERVICE_ID,
    crd_answer,
    crd_discovery,
    eligibility_response,
)
from pas_client.sandbox.responses import (
    build_notification,
    build_response_bundle,
    item_actions,
    operation_outcome,
    shape_reply,
)
from pas_client.sandbox.rules import SandboxRules
from pas_client.sandbox.token import SandboxAuth, TokenIssuer, TokenRefused

log = logging.getLogger("refloop.pas.sandbox")
FHIR_JSON = "application/fhir+json"
MAX_FULL = 1


@dataclass
class SandboxState:
    rules: SandboxRules
    claims: dict[str, dict[str, Any]] = field(default_factory=dict)  # claim identifier -> rec
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    received: list[str] = field(default_factory=list)  # sha256 of each $submit body
    sent: list[bytes] = field(default_factory=list)  # each $submit reply body, as sent
    fail_next: list[int] = field(default_factory=list)  # statuses to answer next, then normal
    delivered: list[dict[str, Any]] = field(default_factory=list)
    events: int = 0
    issuer: TokenIssuer | None = None   # the token endpoint, when auth is configured
    client_certificates: list[str] = field(default_factory=list)  # PEM presented over mTLS
    lock: threading.RLock = field(default_factory=threading.RLock)


def fhir(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype=FHIR_JSON)


def problems(bundle: Any) -> tuple[str, str] | None:
    """Structural checks of a $submit body, as payer gateways make them: (text, expression)."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return "the body must be a PAS request Bundle", "Bundle"
    if bundle.get("type") != "collection":
        return "Bundle.type must be collection", "Bundle.type"
    entries = bundle.get("entry") or []
    claim = entries[0].get("resource", {}) if entries else {}
    if claim.get("resourceType") != "Claim":
        return "the first entry must be the Claim", "Bundle.entry[0].resource"
    for key in ("identifier", "provider", "insurer", "patient", "insurance", "item"):
        if not claim.get(key):
            return f"Claim.{key} is required", f"Bundle.entry[0].resource.{key}"
    if claim.get("use") != "preauthorization":
        return "Claim.use must be preauthorization", "Bundle.entry[0].resource.use"
    urls = {e.get("fullUrl") for e in entries}
    for key in ("patient", "insurer", "provider"):
        if claim[key].get("reference") not in urls:
            return f"Claim.{key} does not resolve in the Bundle", f"Bundle.entry[0].resource.{key}"
    return None


def create_sandbox_app(rules: SandboxRules | None = None,
                       auth: SandboxAuth | None = None) -> Flask:
    state = SandboxState(rules or SandboxRules(),
                         issuer=TokenIssuer(auth) if auth is not None else None)
    app = Flask("refloop-pas-sandbox")
    app.config["SANDBOX"] = state

    @app.before_request
    def authenticate() -> Response | None:
        certificate = request.environ.get("SSL_CLIENT_CERT")
        if certificate and not request.path.startswith("/sandbox/"):
            with state.lock:
                state.client_certificates.append(certificate)
        issuer = state.issuer
        if issuer is None or not issuer.auth.require_bearer or \
                request.path.startswith(("/sandbox/", "/oauth/")):
            return None
        if issuer.accepts(request.headers.get("Authorization", "")):
            return None
        refused = fhir(operation_outcome("login", "a bearer token from /oauth/token is "
                                         "required"), 401)
        refused.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return refused

    @app.post("/oauth/token")
    def token() -> Response:
        if state.issuer is None:
            return fhir(operation_outcome("not-supported", "this sandbox has no token "
                                          "endpoint; start it with a SandboxAuth"), 404)
        try:
            body = state.issuer.issue(request.form.to_dict(), request.base_url)
        except TokenRefused as exc:
            return Response(json.dumps(exc.body()), status=exc.status,
                            mimetype="application/json")
        return Response(json.dumps(body), mimetype="application/json",
                        headers={"Cache-Control": "no-store"})

    @app.post("/Claim/$submit")
    def submit() -> Response:
        body = request.get_data()
        with state.lock:
            state.received.append(hashlib.sha256(body).hexdigest())
            if state.fail_next:
                return Response("sandbox: simulated outage", status=state.fail_next.pop(0))
        try:
            bundle = json.loads(body)
        except ValueError:
            return fhir(operation_outcome("structure", "the body is not JSON"), 400)
        problem = problems(bundle)
        if problem:
            return fhir(operation_outcome("invalid", *problem), 400)
        status, shaped = shape_reply(decide(state, bundle), state.rules.reply_shape)
        with state.lock:
            state.sent.append(shaped)
        return Response(shaped, status=status, mimetype=FHIR_JSON)

    @app.post("/CoverageEligibilityRequest/$submit")
    def eligibility() -> Response:
        try:
            bundle = json.loads(request.get_data())
            answer = eligibility_response(bundle, state.rules)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            return fhir(operation_outcome("invalid", "expected a CoverageEligibilityRequest "
                                          "or a Bundle starting with one"), 400)
        return fhir(answer)

    @app.get("/cds-services")
    def cds_discovery() -> Response:
        return Response(json.dumps(crd_discovery()), mimetype="application/json")

    @app.post(f"/cds-services/{SERVICE_ID}")
    def cds_order_sign() -> Response:
        try:
            answer = crd_answer(json.loads(request.get_data()), state.rules)
        except (ValueError, KeyError, TypeError, AttributeError):
            return fhir(operation_outcome("invalid", "expected a CDS Hooks order-sign call "
                                          "with draftOrders"), 400)
        return Response(json.dumps(answer), mimetype="application/json")

    @app.get("/ClaimResponse/<rid>")
    def read_claim_response(rid: str) -> Response:
        with state.lock:
            found = [rec["response"]["entry"][0]["resource"] for rec in state.claims.values()
                     if rec["response"]["entry"][0]["resource"]["id"] == rid]
        if not found:
            return fhir(operation_outcome("not-found", f"no ClaimResponse {rid}"), 404)
        return fhir(found[0])

    @app.post("/Claim/$inquire")
    def inquire() -> Response:
        try:
            bundle = json.loads(request.get_data())
            claim = bundle["entry"][0]["resource"]
        except (ValueError, KeyError, IndexError, TypeError):
            return fhir(operation_outcome("invalid", "expected an inquiry Bundle"), 400)
        patient = claim.get("patient", {}).get("reference")
        with state.lock:
            found = [rec["response"] for rec in state.claims.values()
                     if rec["patient"] == patient and rec["current"]]
        if state.rules.version == "2.0.1":
            return fhir(found[-1] if found else operation_outcome("not-found", "no match"),
                        200 if found else 404)
        return fhir({"resourceType": "Parameters", "parameter": [
            {"name": "return", "resource": r} for r in found]})

    @app.post("/Subscription")
    def subscribe() -> Response:
        subscription = json.loads(request.get_data())
        subscription["id"] = uuid.uuid4().hex[:12]
        subscription["status"] = "active"
        with state.lock:
            state.subscriptions[subscription["id"]] = subscription
        return fhir(subscription, 201)

    @app.post("/sandbox/release")
    def release() -> Response:
        return fhir({"released": release_pended(state)})

    @app.post("/sandbox/fail-next")
    def fail_next() -> Response:
        with state.lock:
            state.fail_next.extend(int(s) for s in request.get_json()["statuses"])
        return fhir({"queued": len(state.fail_next)})

    @app.get("/sandbox/state")
    def show() -> Response:
        with state.lock:
            return fhir({"received": state.received, "subscriptions": list(state.subscriptions),
                         "delivered": len(state.delivered),
                         "pended": [k for k, v in state.claims.items() if v["pended"]]})

    return app


def decide(state: SandboxState, bundle: dict[str, Any]) -> dict[str, Any]:
    claim = bundle["entry"][0]["resource"]
    identifier = claim["identifier"][0]["value"]
    with state.lock:
        known = state.claims.get(identifier)
        if known is not None:  # a resend of the same request: the same answer
            return dict(known["response"])
        actions = item_actions(claim, state.rules.action_for)
        number = f"SBX{uuid.uuid4().hex[:8].upper()}"
        response = build_response_bundle(bundle, actions, number, state.rules.version)
        for rec in state.claims.values():
            if rec["patient"] == claim["patient"]["reference"] and claim.get("related"):
                rec["current"] = False
        state.claims[identifier] = {"bundle": bundle, "response": response, "number": number,
                                    "patient": claim["patient"]["reference"], "current": True,
                                    "pended": "pend" in actions.values()}
    if "pend" in actions.values() and state.rules.pend_seconds > 0:
        threading.Timer(state.rules.pend_seconds, release_pended, args=(state,)).start()
    return response


def release_pended(state: SandboxState) -> int:
    """Decide every pended request by rules.after_pend and notify the subscribers."""
    with state.lock:
        pended = [(k, v) for k, v in state.claims.items() if v["pended"]]
        for _, rec in pended:
            actions = {seq: (state.rules.after_pend if a == "pend" else a)
                       for seq, a in item_actions(rec["bundle"]["entry"][0]["resource"],
                                                  state.rules.action_for).items()}
            rec["response"] = build_response_bundle(rec["bundle"], actions, rec["number"],
                                                    state.rules.version)
            rec["pended"] = False
        subscriptions = list(state.subscriptions.values())
    for _, rec in pended:
        for subscription in subscriptions:
            if matches(subscription, rec["bundle"]):
                notify(state, subscription, rec["response"])
    return len(pended)


def matches(subscription: dict[str, Any], bundle: dict[str, Any]) -> bool:
    """The filter value (org-identifier=X) names the requesting organisation's identifier."""
    criteria = subscription.get("_criteria", {}).get("extension", [])
    values = {v for e in criteria for v in e.get("valueString", "").split("=", 1)[-1].split(",")}
    provider = bundle["entry"][0]["resource"]["provider"]["reference"]
    for entry in bundle["entry"]:
        if entry["fullUrl"] == provider:
            ids = {i.get("value") for i in entry["resource"].get("identifier", [])}
            return bool(ids & values)
    return False


def notify(state: SandboxState, subscription: dict[str, Any], response: dict[str, Any]) -> None:
    with state.lock:
        state.events += 1
        number = state.events
    note = build_notification(subscription, response, number, state.rules.notification_shape)
    channel = subscription.get("channel", {})
    headers = {"Content-Type": FHIR_JSON}
    for line in channel.get("header", []):
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    post = urllib.request.Request(channel["endpoint"], data=json.dumps(note).encode(),
                                  headers=headers, method="POST")
    try:
        with urllib.request.urlopen(post, timeout=10) as reply:
            status = reply.status
    except OSError as exc:
        log.warning("sandbox notification failed", extra={"error": str(exc)})
        status = 0
    with state.lock:
        state.delivered.append({"subscription": subscription["id"], "status": status})


class SandboxServer:
    """Run the sandbox on 127.0.0.1 in a thread (port 0 picks a free port)."""

    def __init__(self, rules: SandboxRules | None = None, host: str = "127.0.0.1",
                 port: int = 0, auth: SandboxAuth | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.app = create_sandbox_app(rules, auth)
        self.scheme = "https" if ssl_context is not None else "http"
        self.server = make_server(host, port, self.app, threaded=True, ssl_context=ssl_context)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name="pas-sandbox")

    @property
    def state(self) -> SandboxState:
        state: SandboxState = self.app.config["SANDBOX"]
        return state

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_port}"

    @property
    def token_url(self) -> str:
        return f"{self.url}/oauth/token"

    def start(self) -> SandboxServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)
