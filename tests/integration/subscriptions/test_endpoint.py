"""The hook endpoint on a real port: authentication, every wire shape, bad input kept in
quarantine, replies the senders accept. Requests here are built by the test in the shapes HAPI
and sekmet send (reference/subscriptions.md §2.3), not official data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests

from referrals.worker import Worker
from refloop.services import Services
from refloop.wiring import all_handlers
from subscriptions.adapter import SubscriptionsAdapter
from subscriptions.registry import Hook

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "subscriptions"
FHIR = {"Content-Type": "application/fhir+json; charset=utf-8"}


def adapter(services: Services) -> SubscriptionsAdapter:
    found: SubscriptionsAdapter = services.adapters["subscriptions"]
    return found


def hook_for(services: Services, kind: str = "subscriptions.referral") -> Hook:
    return adapter(services).registry.open_hook(server="http://ehr.invalid/fhir",
                                                purpose="referrals", deliver_kind=kind)


def auth(hook: Hook) -> dict[str, str]:
    name, _, value = hook.header.partition(": ")
    return {**FHIR, name: value}


def stored(services: Services) -> int:
    return sum(services.inbox.counts().values())


def test_wrong_or_missing_secret_is_401_and_nothing_is_stored(listener: Any) -> None:
    services = listener.services
    hook = hook_for(services)
    body = {"resourceType": "ServiceRequest", "id": "1", "status": "active"}
    for headers in (FHIR, {**FHIR, "Authorization": "Bearer wrong"},
                    {**FHIR, "Authorization": hook.secret}):
        r = requests.put(f"{hook.url}/ServiceRequest/1", json=body, headers=headers, timeout=5)
        assert r.status_code == 401
        assert r.json()["resourceType"] == "OperationOutcome"
    unknown = hook.url.rsplit("/", 1)[0] + "/not-a-hook"
    r = requests.post(unknown, json=body, headers=auth(hook), timeout=5)
    assert r.status_code == 401
    assert stored(services) == 0
    assert services.quarantine.list() == []


def test_every_wire_shape_is_stored_and_answered(listener: Any) -> None:
    services = listener.services
    hook = hook_for(services)
    sr = {"resourceType": "ServiceRequest", "id": "7", "meta": {"versionId": "2"},
          "status": "active", "intent": "order", "subject": {"reference": "Patient/1"}}
    r = requests.put(f"{hook.url}/ServiceRequest/7", json=sr,
                     headers={**auth(hook), "If-Match": 'W/"2"'}, timeout=5)
    assert r.status_code == 200 and r.json()["resourceType"] == "OperationOutcome"
    r = requests.post(hook.url, data=b"", headers={"Authorization": auth(hook)["Authorization"]},
                      timeout=5)
    assert r.status_code == 200
    r = requests.post(hook.url, json={**sr, "id": "8"}, headers=auth(hook), timeout=5)
    assert r.status_code == 200
    r = requests.delete(f"{hook.url}/ServiceRequest/9", headers=auth(hook), timeout=5)
    assert r.status_code == 200
    bundle = json.loads((FIXTURES / "backport-1.1.0/r4/Bundle-r4-notification-id-only.json")
                        .read_text())
    r = requests.post(hook.url, json=bundle, headers=auth(hook), timeout=5)
    assert r.status_code == 200
    assert r.json() == {"resourceType": "Bundle", "type": "transaction-response"}
    r5 = json.loads(next((FIXTURES / "r5-core").glob("notification-full-resource.*")).read_text())
    r = requests.post(hook.url, json=r5, headers=auth(hook), timeout=5)
    assert r.json()["type"] == "transaction-response"
    assert services.inbox.counts() == {"received": 6}
    assert services.work.counts() == {"pending": 6}
    message = services.inbox.get(1)
    assert json.loads(message.body) == sr
    assert "Authorization" not in message.headers and "authorization" not in message.headers


def test_handshake_and_heartbeat_update_health_only(listener: Any) -> None:
    services = listener.services
    hook = hook_for(services)
    for name in ("Bundle-r4-notification-handshake.json", "Bundle-r4-notification-heartbeat.json"):
        bundle = json.loads((FIXTURES / "backport-1.1.0/r4" / name).read_text())
        r = requests.post(hook.url, json=bundle, headers=auth(hook), timeout=5)
        assert r.status_code == 200 and r.json()["type"] == "transaction-response"
    assert services.work.counts() == {}
    assert services.inbox.counts() == {"processed": 2}
    health = adapter(services).registry.get(hook.id)
    assert (health.notifications, health.last_notification_type) == (2, "heartbeat")


def test_bad_input_gets_4xx_and_is_quarantined(listener: Any) -> None:
    services = listener.services
    hook = hook_for(services)
    limit = adapter(services).config.max_body_bytes
    cases = [
        (requests.post, hook.url, b"{not json", 400, "structure"),
        (requests.put, f"{hook.url}/ServiceRequest/1",
         json.dumps({"resourceType": "Patient", "id": "1"}).encode(), 400, "structure"),
        (requests.post, hook.url, json.dumps({"resourceType": "Bundle", "type": "history",
                                              "entry": []}).encode(), 400, "structure"),
        (requests.post, hook.url, b"{" + b" " * (limit + 10) + b"}", 413, "too-costly"),
    ]
    for send, url, body, status, code in cases:
        r = send(url, data=body, headers=auth(hook), timeout=10)
        assert r.status_code == status, r.text
        outcome = r.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == code
    kept = services.quarantine.list()
    assert len(kept) == len(cases)
    assert {bytes(k.original[:9]) for k in kept} >= {b"{not json"}
    assert max(len(k.original) for k in kept) == limit  # the oversized body: first bytes kept
    assert services.inbox.counts() == {"rejected": len(cases)}
    assert services.work.counts() == {}
    r = requests.put(f"{hook.url}/ServiceRequest/5", headers=auth(hook), timeout=5,
                     json={"resourceType": "ServiceRequest", "id": "5", "status": "active"})
    assert r.status_code == 200  # still serving


def test_other_consumers_get_one_work_item_per_notification(listener: Any) -> None:
    services = listener.services
    subs = adapter(services)
    hook = subs.open_hook(server="http://payer.invalid/fhir", purpose="pas",
                          deliver_kind="pas.notification")
    assert hook.url == f"{services.settings.base_url}/hooks/{hook.id}"
    assert hook.header == f"Authorization: Bearer {hook.secret}"
    assert hook.secret not in repr(hook)
    subs.attach(hook.id, "sub-77")
    bundle = json.loads((FIXTURES / "backport-1.1.0/r4b/Bundle-r4b-notification-multi-resource"
                         ".json").read_text())
    r = requests.post(hook.url, json=bundle, headers=auth(hook), timeout=5)
    assert r.status_code == 200
    handshake = json.loads((FIXTURES / "backport-1.1.0/r4/Bundle-r4-notification-handshake.json")
                           .read_text())
    requests.post(hook.url, json=handshake, headers=auth(hook), timeout=5)
    seen: list[dict[str, Any]] = []
    handlers = {**all_handlers(services), "pas.notification": lambda item: seen.append(
        item.payload)}
    Worker(services.work, handlers).drain()
    assert len(seen) == 1
    payload = seen[0]
    assert payload["server"] == "http://payer.invalid/fhir" and payload["hook_id"] == hook.id
    assert payload["notification_type"] == "event-notification"
    assert payload["subscription"] == "https://example.org/fhir/Subscription/admission"
    assert payload["events"] == [{"event_number": "2",
                                  "focus": "Encounter/86009987-eabe-42bf-8c02-b112b18cb616"}]
    assert [r["resourceType"] for r in payload["resources"]] == ["Encounter", "Patient"]
    assert isinstance(payload["inbox_id"], int)
    row = subs.registry.get(hook.id)
    assert (row.subscription_id, row.last_event_number) == ("sub-77", "2")


def test_notifications_whose_events_carry_no_identity_are_each_stored(listener: Any) -> None:
    """A notification is stored once per event (number, focus, version). When a notification
    names no event that can be told apart (no readable number and no version), only its bytes
    identify it: different notifications are all stored, a byte-for-byte redelivery once."""
    services = listener.services
    hook = hook_for(services)

    def status(number: Any = None, since: str | None = None, focus: str | None = None
               ) -> dict[str, Any]:
        event = {"eventNumber": number} if number is not None else {}
        if focus:
            event["focus"] = {"reference": focus}
        resource: dict[str, Any] = {"resourceType": "SubscriptionStatus",
                                    "type": "event-notification",
                                    "notificationEvent": [event] if event else []}
        if since:
            resource["eventsSinceSubscriptionStart"] = since
        return {"resourceType": "Bundle", "type": "history",
                "entry": [{"resource": resource}]}

    notes = [status(number="-5", focus="ServiceRequest/1"),
             status(number="99999999999999999999999999", focus="ServiceRequest/1"),
             status(number="1x", focus="ServiceRequest/1"),
             status(since="7"), status(since="8"),
             status(focus="#contained"), status(focus="ServiceRequest/2")]
    for note in notes + notes[:2]:  # the last two are redeliveries
        r = requests.post(hook.url, json=note, headers=auth(hook), timeout=5)
        assert r.status_code == 200, r.text
    assert services.inbox.counts() == {"received": len(notes)}


def test_a_nul_in_the_path_is_refused_not_a_server_error(listener: Any) -> None:
    """PostgreSQL holds no NUL: a hook id with one is an unknown hook (401, nothing stored),
    and a resource id with one is bad input kept with its reason (400), on both databases."""
    services = listener.services
    hook = hook_for(services)
    base = hook.url.rsplit("/", 1)[0]
    for path in ("/%00", "/a%00b/ServiceRequest/1"):
        r = requests.post(base + path, headers=auth(hook), timeout=5)
        assert r.status_code == 401 and r.json()["resourceType"] == "OperationOutcome"
    assert stored(services) == 0 and services.quarantine.list() == []
    body = {"resourceType": "ServiceRequest", "id": "1", "status": "active"}
    for method, payload in (("PUT", None), ("POST", None), ("PUT", body)):
        r = requests.request(method, f"{hook.url}/ServiceRequest/%00", json=payload,
                             headers=auth(hook), timeout=5)
        assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
    reasons = [entry.reason for entry in services.quarantine.list()]
    assert len(reasons) == 3 and all("\x00" not in reason for reason in reasons)
    assert any("ServiceRequest/\\x00" in reason for reason in reasons)


def test_a_forwarded_notification_leaves_out_what_no_store_holds(listener: Any) -> None:
    """U+0000 and an unpaired surrogate in a notification's resources (FHIR strings hold
    neither) are left out before it is forwarded, as for a server's replies: the forwarded work
    item failed eight times on SQLite (surrogate) and was quarantined on PostgreSQL (NUL)."""
    services = listener.services
    hook = adapter(services).open_hook(server="http://payer.invalid/fhir", purpose="pas",
                                       deliver_kind="pas.notification")
    bundle = json.loads((FIXTURES / "backport-1.1.0/r4b/Bundle-r4b-notification-multi-resource"
                         ".json").read_text())
    bundle["entry"][-1]["resource"]["name"] = [{"family": "Nu\u0000ll \ud800x"}]
    raw = json.dumps(bundle).encode()  # \u0000 and \ud800 as JSON escapes, as senders write them
    assert b"\\u0000" in raw and b"\\ud800" in raw
    assert requests.post(hook.url, data=raw, headers=auth(hook), timeout=5).status_code == 200
    seen: list[dict[str, Any]] = []
    Worker(services.work, {**all_handlers(services), "pas.notification":
                           lambda item: seen.append(item.payload)}).drain()
    assert services.quarantine.list() == []
    [payload] = seen
    assert payload["resources"][-1]["name"] == [{"family": "Null \ufffdx"}]
