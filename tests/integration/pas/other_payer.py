"""A SECOND FAKE PAYER, written here for the tests only: a payer's PAS endpoint cannot run here,
and the payer sandbox (pas_client/sandbox) shares our own code, so this one shares none. It is a
bare WSGI application on 127.0.0.1 (port 0) that answers $submit, $inquire, ClaimResponse reads,
CoverageEligibilityRequest/$submit and a CRD (CDS Hooks) service, each in the shape a test
scripts: the IG's Bundle, a bare ClaimResponse, the ClaimResponse not first, a Parameters, an
OperationOutcome, malformed JSON, items the request did not contain, nothing at all."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

PAS_EXT = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/"
X12_306 = "https://codesystem.x12.org/005010/306"
CRD_EXT = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def claim_response_for(entry: dict[str, Any], code: str, number: str) -> dict[str, Any]:
    """A ClaimResponse deciding every item of the Claim in `entry` with X12 306 `code`."""
    claim = entry["resource"]
    parts: list[dict[str, Any]] = [{"url": PAS_EXT + "extension-reviewActionCode",
                                    "valueCodeableConcept": {"coding": [
                                        {"system": X12_306, "code": code}]}}]
    if code in ("A1", "A2", "A6"):
        parts.append({"url": "number", "valueString": number})
    items = [{"itemSequence": item["sequence"], "adjudication": [{
        "category": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/adjudication",
                                 "code": "submitted"}]},
        "extension": [{"url": PAS_EXT + "extension-reviewAction", "extension": parts}]}]}
        for item in claim.get("item", [])]
    return {"resourceType": "ClaimResponse", "id": uuid.uuid4().hex[:16], "status": "active",
            "type": claim["type"], "use": "preauthorization", "patient": claim["patient"],
            "created": _now(), "insurer": claim["insurer"], "requestor": claim["provider"],
            "request": {"reference": entry["fullUrl"], "identifier": claim["identifier"][0]},
            "outcome": "complete", "item": items}


def response_bundle(claim_response: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "timestamp": _now(),
            "identifier": {"system": "urn:other-payer", "value": uuid.uuid4().hex},
            "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": claim_response},
                      {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": {
                          "resourceType": "Organization", "id": "other-payer",
                          "name": "Other Payer", "active": True}}]}


def shaped(claim_response: dict[str, Any], shape: str) -> tuple[int, bytes]:
    """A $submit reply in `shape`."""
    bundle = response_bundle(claim_response)
    if shape == "bare":
        return 200, json.dumps(claim_response).encode()
    if shape == "not-first":
        return 200, json.dumps({**bundle, "entry": bundle["entry"][::-1]}).encode()
    if shape == "operation-outcome":
        return 200, json.dumps({"resourceType": "OperationOutcome", "issue": [
            {"severity": "information", "code": "informational",
             "diagnostics": "received; a decision will follow"}]}).encode()
    if shape == "rejected":
        return 400, json.dumps({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "required", "diagnostics": "member id missing"}]}
        ).encode()
    if shape == "malformed":
        return 200, b'{"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Cla'
    if shape == "html":
        return 200, b"<html><body>Service temporarily rerouted</body></html>"
    if shape == "foreign-items":
        for item in claim_response["item"]:
            item["itemSequence"] = 7
        return 200, json.dumps(response_bundle(claim_response)).encode()
    return 200, json.dumps(bundle).encode()


@dataclass
class OtherPayer:
    submit_shape: str = "bundle"
    code: str = "A1"                 # X12 306 code for every item on $submit
    inquire_shape: str = "parameters"   # parameters | bundle | empty | not-found | malformed
    read_status: int = 200
    eligibility: dict[str, Any] = field(default_factory=lambda: {
        "inforce": True, "network": "in", "authorization_required": True, "plan": "Gold PPO"})
    eligibility_status: int = 200
    fail_next: list[int] = field(default_factory=list)  # statuses to answer $submit with first
    crd_pa_needed: str = "auth-needed"
    #: a test's hostile payer: the $submit reply's ClaimResponses made of the one it decided
    rewrite: Callable[[dict[str, Any]], list[dict[str, Any]]] | None = None
    #: ClaimResponse id -> the current ClaimResponse; request fullUrl -> its Claim entry
    responses: dict[str, dict[str, Any]] = field(default_factory=dict)
    claims: dict[str, dict[str, Any]] = field(default_factory=dict)
    sent: list[tuple[str, int, bytes]] = field(default_factory=list)  # (path, status, body)
    received: list[tuple[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def start(self) -> OtherPayer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)

    def decide(self, code: str) -> dict[str, Any]:
        """Decide the last request again (a pend released): the new current ClaimResponse."""
        with self.lock:
            full_url, entry = list(self.claims.items())[-1]
            response = claim_response_for(entry, code, f"OP-{len(self.responses)}")
            self.responses[response["id"]] = response
            self.claims[full_url] = {**entry, "current": response["id"]}
        return response

    def current(self) -> dict[str, Any]:
        with self.lock:
            entry = list(self.claims.values())[-1]
            return self.responses[entry["current"]]

    # --- WSGI ------------------------------------------------------------------------------
    def app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        body = request.get_data()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        with self.lock:
            self.received.append((request.path, parsed))
        status, out = self.route(request.method, request.path, parsed)
        with self.lock:
            self.sent.append((request.path, status, out))
        kind = "text/html" if out.startswith(b"<") else "application/fhir+json"
        return Response(out, status=status, content_type=kind,
                        headers={"X-Other-Payer": "1"})(environ, start_response)

    def route(self, method: str, path: str, parsed: Any) -> tuple[int, bytes]:
        if path == "/Claim/$submit" and self.fail_next:
            return self.fail_next.pop(0), b"temporarily unavailable"
        if path == "/Claim/$submit":
            entry = parsed["entry"][0]
            response = claim_response_for(entry, self.code, f"OP-{len(self.responses)}")
            with self.lock:
                self.responses[response["id"]] = response
                self.claims[entry["fullUrl"]] = {**entry, "current": response["id"]}
            if self.rewrite is not None:
                bundle = response_bundle(json.loads(json.dumps(response)))
                bundle["entry"][:1] = [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": r}
                                       for r in self.rewrite(json.loads(json.dumps(response)))]
                return 200, json.dumps(bundle).encode()
            return shaped(json.loads(json.dumps(response)), self.submit_shape)
        if path == "/Claim/$inquire":
            return self.inquire()
        if method == "GET" and path.startswith("/ClaimResponse/"):
            found = self.responses.get(path.rsplit("/", 1)[-1])
            if found is None or self.read_status != 200:
                return self.read_status if self.read_status != 200 else 404, json.dumps({
                    "resourceType": "OperationOutcome", "issue": [
                        {"severity": "error", "code": "not-found"}]}).encode()
            return 200, json.dumps(found).encode()
        if path == "/CoverageEligibilityRequest/$submit":
            if self.eligibility_status != 200:
                return self.eligibility_status, json.dumps({
                    "resourceType": "OperationOutcome", "issue": [
                        {"severity": "error", "code": "required",
                         "diagnostics": "member id missing"}]}).encode()
            return 200, json.dumps(self.eligibility_response(parsed)).encode()
        if path == "/cds-services":
            return 200, json.dumps({"services": [
                {"hook": "order-select", "id": "select-crd", "description": "unused"},
                {"hook": "order-sign", "id": "sign-crd", "title": "Other payer CRD",
                 "description": "coverage requirements",
                 "prefetch": {"patient": "Patient/{{context.patientId}}",
                              "coverage": "Coverage?patient={{context.patientId}}"
                                          "&status=active"}}]}).encode()
        if path == "/cds-services/sign-crd":
            return 200, json.dumps(self.crd_response(parsed)).encode()
        return 404, b'{"resourceType": "OperationOutcome", "issue": []}'

    def inquire(self) -> tuple[int, bytes]:
        with self.lock:
            current = [self.responses[e["current"]] for e in self.claims.values()]
        shape = self.inquire_shape
        if shape == "empty":
            return 200, b'{"resourceType": "Parameters"}'
        if shape == "not-found":
            return 404, json.dumps({"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "not-found"}]}).encode()
        if shape == "malformed":
            return 200, b"{not json"
        if shape == "bundle":
            return 200, json.dumps(response_bundle(current[-1])).encode()
        return 200, json.dumps({"resourceType": "Parameters", "parameter": [
            {"name": "return", "resource": response_bundle(c)} for c in current]}).encode()

    def eligibility_response(self, parsed: Any) -> dict[str, Any]:
        request = parsed["entry"][0]["resource"] if parsed.get("resourceType") == "Bundle" \
            else parsed
        chosen = self.eligibility
        item: dict[str, Any] = {
            "category": {"coding": [{"system": "https://codesystem.x12.org/005010/1365",
                                     "code": "3"}]},
            "network": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                              "benefit-network", "code": chosen["network"]}]},
            "authorizationRequired": chosen["authorization_required"], "name": chosen["plan"]}
        return {"resourceType": "CoverageEligibilityResponse", "id": uuid.uuid4().hex[:12],
                "status": "active", "purpose": request.get("purpose", ["validation"]),
                "patient": request["patient"], "created": _now(),
                "request": {"identifier": (request.get("identifier") or [{}])[0]},
                "outcome": "complete", "insurer": request["insurer"],
                "insurance": [{"coverage": request["insurance"][0]["coverage"],
                               "inforce": chosen["inforce"], "item": [item]}]}

    def crd_response(self, parsed: Any) -> dict[str, Any]:
        orders = parsed["context"]["draftOrders"]["entry"]
        actions = []
        for entry in orders:
            order = json.loads(json.dumps(entry["resource"]))
            order.setdefault("extension", []).append({"url": CRD_EXT, "extension": [
                {"url": "coverage", "valueReference": {"reference": "Coverage/x"}},
                {"url": "covered", "valueCode": "covered"},
                {"url": "pa-needed", "valueCode": self.crd_pa_needed},
                {"url": "date", "valueDate": _now()[:10]},
                {"url": "coverage-assertion-id", "valueString": "OTHER-CRD-1"}]})
            actions.append({"type": "update", "description": "coverage information",
                            "resource": order})
        return {"cards": [{"summary": f"Prior authorization: {self.crd_pa_needed}",
                           "indicator": "info", "source": {"label": "Other payer"}}],
                "systemActions": actions}
