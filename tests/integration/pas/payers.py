"""The two payers every reply and follow-up test runs against, behind one small interface: the
PAYER SANDBOX (pas_client/sandbox, a fake payer shipped for the demo) and the OTHER PAYER
(other_payer.py, a fake written for the tests that shares no code with pas_client). Neither is a
real payer: a payer's PAS endpoint cannot run here."""

from __future__ import annotations

import json
from typing import Any

from other_payer import OtherPayer, response_bundle

from pas_client.sandbox import SandboxRules, SandboxServer
from pas_client.sandbox.responses import build_notification
from pas_client.sandbox.server import release_pended
from subscriptions.notification import parse_notification_bundle

#: our shape names -> the sandbox's reply_shape rule
SANDBOX_SHAPES = {"bundle": "bundle", "bare": "claim-response",
                  "not-first": "claim-response-not-first",
                  "operation-outcome": "operation-outcome", "malformed": "malformed",
                  "foreign-items": "foreign-items"}
#: X12 306 code -> the sandbox's action
SANDBOX_ACTIONS = {"A1": "approve", "A4": "pend", "A3": "deny", "CT": "contact",
                   "NA": "no-auth"}
TOPIC = "http://hl7.org/fhir/us/davinci-pas/SubscriptionTopic/PASSubscriptionTopic"


class SandboxPayer:
    kind = "sandbox"

    def __init__(self) -> None:
        self.server = SandboxServer(SandboxRules()).start()
        self.url = self.server.url
        self.events = 0

    def answer(self, shape: str, code: str = "A1") -> None:
        self.server.state.rules.reply_shape = SANDBOX_SHAPES[shape]
        self.server.state.rules.default = SANDBOX_ACTIONS[code]

    def fail(self, *statuses: int) -> None:
        self.server.state.fail_next.extend(statuses)

    def release(self, code: str) -> None:
        self.server.state.rules.after_pend = SANDBOX_ACTIONS[code]
        release_pended(self.server.state)

    def current(self) -> dict[str, Any]:
        record = list(self.server.state.claims.values())[-1]
        response: dict[str, Any] = record["response"]
        return response

    def notification(self, shape: str) -> dict[str, Any]:
        self.events += 1
        return build_notification({"id": "sub1"}, self.current(), self.events, shape)

    def last_sent(self) -> bytes:
        return self.server.state.sent[-1]

    def stop(self) -> None:
        self.server.stop()


class OtherPayerUnderTest:
    kind = "other"

    def __init__(self) -> None:
        self.payer = OtherPayer().start()
        self.url = self.payer.url
        self.events = 0

    def answer(self, shape: str, code: str = "A1") -> None:
        self.payer.submit_shape = shape
        self.payer.code = code

    def fail(self, *statuses: int) -> None:
        self.payer.fail_next.extend(statuses)

    def release(self, code: str) -> None:
        self.payer.decide(code)

    def current(self) -> dict[str, Any]:
        return response_bundle(self.payer.current())

    def notification(self, shape: str) -> dict[str, Any]:
        """A backport notification (history Bundle, Parameters status first) in `shape`."""
        self.events += 1
        response = self.current()
        claim_response = response["entry"][0]["resource"]
        nested_url = "urn:uuid:nested-response-bundle"
        focus = {"nested": nested_url, "flattened": response["entry"][0]["fullUrl"],
                 "id-only": f"{self.url}/ClaimResponse/{claim_response['id']}"}[shape]
        status = {"resourceType": "Parameters", "parameter": [
            {"name": "subscription", "valueReference": {"reference": "Subscription/sub1"}},
            {"name": "topic", "valueCanonical": TOPIC},
            {"name": "status", "valueCode": "active"},
            {"name": "type", "valueCode": "event-notification"},
            {"name": "events-since-subscription-start", "valueString": str(self.events)},
            {"name": "notification-event", "part": [
                {"name": "event-number", "valueString": str(self.events)},
                {"name": "focus", "valueReference": {"reference": focus}}]}]}
        entries: list[dict[str, Any]] = [{"fullUrl": "urn:uuid:status", "resource": status}]
        if shape == "nested":
            entries.append({"fullUrl": nested_url, "resource": response})
        elif shape == "flattened":
            entries += response["entry"]
        return {"resourceType": "Bundle", "type": "history", "entry": entries}

    def last_sent(self) -> bytes:
        return [body for path, _, body in self.payer.sent if path == "/Claim/$submit"][-1]

    def stop(self) -> None:
        self.payer.stop()


PayerUnderTest = SandboxPayer | OtherPayerUnderTest


def start_payer(kind: str) -> PayerUnderTest:
    return SandboxPayer() if kind == "sandbox" else OtherPayerUnderTest()


def notification_payload(server: str, bundle: dict[str, Any]) -> dict[str, Any]:
    """The "pas.notification" work payload the subscriptions adapter makes of `bundle`
    (docs/subscriptions.md: the contract for other consumers of hooks)."""
    note = parse_notification_bundle(json.loads(json.dumps(bundle)))
    return {"inbox_id": 0, "server": server, "hook_id": "h", "notification_type": note.type,
            "subscription": note.subscription,
            "events": [{"event_number": e.event_number, "focus": e.focus} for e in note.events],
            "resources": [dict(r) for r in note.resources]}
