"""The notification parser on every official example (fixtures/subscriptions, CC0, see
PROVENANCE.md) and on the lenient variants real servers send (built here, not official data)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from referrals.errors import InboundError
from subscriptions.notification import parse_notification, to_relative_reference

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "subscriptions"
ENC = "Encounter/86009987-eabe-42bf-8c02-b112b18cb616"

#: file -> (shape, type, status, events-since-start, [(event number, focus)], full resources)
EXPECTED: dict[str, tuple[str, str, str, str | None, list[tuple[str, str | None]], int]] = {
    "backport-1.1.0/r4/Bundle-r4-notification-empty.json":
        ("backport-r4", "event-notification", "active", "2", [("2", None)], 0),
    "backport-1.1.0/r4/Bundle-r4-notification-error.json":
        ("backport-r4", "query-status", "error", "3", [], 0),
    "backport-1.1.0/r4/Bundle-r4-notification-full-resource.json":
        ("backport-r4", "event-notification", "active", "2", [("2", ENC)], 1),
    "backport-1.1.0/r4/Bundle-r4-notification-handshake.json":
        ("backport-r4", "handshake", "requested", "0", [], 0),
    "backport-1.1.0/r4/Bundle-r4-notification-heartbeat.json":
        ("backport-r4", "heartbeat", "active", "2", [], 0),
    "backport-1.1.0/r4/Bundle-r4-notification-id-only.json":
        ("backport-r4", "event-notification", "active", "2", [("2", ENC)], 0),
    "backport-1.1.0/r4/Bundle-r4-notification-multi-resource.json":
        ("backport-r4", "event-notification", "active", "2", [("2", ENC)], 2),
    "backport-1.1.0/r4b/Bundle-r4b-notification-empty.json":
        ("backport-r4b", "event-notification", "active", "2", [("2", None)], 0),
    "backport-1.1.0/r4b/Bundle-r4b-notification-error.json":
        ("backport-r4b", "query-status", "error", "3", [], 0),
    "backport-1.1.0/r4b/Bundle-r4b-notification-full-resource.json":
        ("backport-r4b", "event-notification", "active", "2", [("2", ENC)], 1),
    "backport-1.1.0/r4b/Bundle-r4b-notification-handshake.json":
        ("backport-r4b", "handshake", "requested", "0", [], 0),
    "backport-1.1.0/r4b/Bundle-r4b-notification-heartbeat.json":
        ("backport-r4b", "heartbeat", "active", "2", [], 0),
    "backport-1.1.0/r4b/Bundle-r4b-notification-id-only.json":
        ("backport-r4b", "event-notification", "active", "2", [("2", ENC)], 0),
    "backport-1.1.0/r4b/Bundle-r4b-notification-multi-resource.json":
        ("backport-r4b", "event-notification", "active", "2", [("2", ENC)], 2),
    "backport-1.2.0-ballot/Bundle-r4-notification-empty-with-auth.json":
        ("backport-r4", "event-notification", "active", "2", [("2", None)], 0),
    "backport-1.2.0-ballot/Bundle-r4-notification-full-resource-with-query.json":
        ("backport-r4", "event-notification", "active", "2", [("2", ENC)], 1),
    "backport-1.2.0-ballot/Bundle-r4-notification-id-only-with-auth.json":
        ("backport-r4", "event-notification", "active", "2", [("2", ENC)], 0),
    "backport-1.2.0-ballot/Bundle-r4-notification-id-only-with-query.json":
        ("backport-r4", "event-notification", "active", "2", [("2", ENC)], 0),
    "backport-1.2.0-ballot/Bundle-r4b-notification-empty-with-auth.json":
        ("backport-r4b", "event-notification", "active", "2", [("2", None)], 0),
    "backport-1.2.0-ballot/Bundle-r4b-notification-full-resource-with-query.json":
        ("backport-r4b", "event-notification", "active", "2", [("2", ENC)], 1),
    "backport-1.2.0-ballot/Bundle-r4b-notification-id-only-with-auth.json":
        ("backport-r4b", "event-notification", "active", "2", [("2", ENC)], 0),
    "backport-1.2.0-ballot/Bundle-r4b-notification-id-only-with-query.json":
        ("backport-r4b", "event-notification", "active", "2", [("2", ENC)], 0),
    "r5-core/notification-handshake.Bundle-54f808cf-d159-4c9b-accb-c33eb20f0ecc.json":
        ("r5", "handshake", "requested", "0", [], 0),
    "r5-core/notification-heartbeat.Bundle-3d20ea4b-90dc-4d0d-b15a-c7a893389401.json":
        ("r5", "heartbeat", "active", "310", [], 0),
    "r5-core/notification-empty.Bundle-9601c07a-e34f-4945-93ca-6efb5394c995.json":
        ("r5", "event-notification", "active", "2", [("2", None)], 0),
    "r5-core/notification-id-only.Bundle-3945182f-d315-4dbf-9259-09d863c7e7da.json":
        ("r5", "event-notification", "active", "2", [("2", "Encounter/2")], 0),
    "r5-core/notification-id-only-multi-resource.Bundle-920a46b7-045a-4773-82bd-8e90c3e15653.json":
        ("r5", "event-notification", "active", "2", [("2", "Encounter/2")], 0),
    "r5-core/notification-full-resource.Bundle-00b99077-2bda-436e-98cc-a4f65d6c2fe0.json":
        ("r5", "event-notification", "active", "2", [("2", "Encounter/2")], 1),
    "r5-core/notification-full-resource-multi-resource.Bundle-fdd78223-f79f-43b4-8979-ad49d4ac248c.json":
        ("r5", "event-notification", "active", "2", [("2", "Encounter/2")], 2),
    "r5-core/notification-error.Bundle-e2c9dc20-615e-4603-9005-74deb209cbb0.json":
        ("r5", "event-notification", "error", "328", [("328", None)], 0),
    "r5-core/status-query-status.Bundle-40464b74-fad0-4f45-ab60-e67f949c5e92.json":
        ("r5", "query-status", "active", "310", [], 0),
    "r5-core/events-query-event.Bundle-787e69f6-81a8-44e4-b404-257013dec332.json":
        ("r5", "query-event", "active", "310", [("307", "Encounter/307"),
                                                ("308", "Encounter/308")], 3),
    "r5-core/notification-message-channel.Bundle-0f322dbe-4f8d-4cbd-9ecb-bc8dc6f65f6a.json":
        ("r5", "event-notification", "active", "2", [("2", "Encounter/2")], 1),
}


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def test_every_official_notification_example_is_covered() -> None:
    found = {str(p.relative_to(FIXTURES)) for p in FIXTURES.rglob("*.json")
             if "Bundle" in p.name}
    assert found == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_official_example_parses(name: str) -> None:
    shape, kind, status, since, events, resources = EXPECTED[name]
    note = parse_notification("POST", "", load(name))
    assert (note.shape, note.type, note.status, note.events_since_start) == \
        (shape, kind, status, since)
    assert [(e.event_number, e.focus) for e in note.events] == events
    assert len(note.resources) == resources
    assert note.starts_work == (kind == "event-notification")
    assert note.subscription and note.subscription.split("/")[-2] == "Subscription"


def test_error_examples_carry_the_error_code() -> None:
    note = parse_notification(
        "POST", "", load("backport-1.1.0/r4/Bundle-r4-notification-error.json"))
    assert note.errors == ("no-response",)


def test_full_resource_is_found_for_its_focus() -> None:
    note = parse_notification(
        "POST", "", load("backport-1.1.0/r4/Bundle-r4-notification-full-resource.json"))
    resource = note.resource_for(ENC)
    assert resource is not None and resource["status"] == "in-progress"


def hapi_variant() -> dict[str, Any]:
    """HAPI-shaped R4 backport notification (built here from the official full-resource one):
    status entry not first and without request, timestamp as valueDate, integer numbers,
    doubled-type relative focus."""
    bundle = load("backport-1.1.0/r4/Bundle-r4-notification-full-resource.json")
    status, resource = copy.deepcopy(bundle["entry"][0]), copy.deepcopy(bundle["entry"][1])
    status.pop("request", None)
    status.pop("response", None)
    for p in status["resource"]["parameter"]:
        if p["name"] == "events-since-subscription-start":
            p.pop("valueString")
            p["valueInteger"] = 7
        if p["name"] == "notification-event":
            p["part"] = [{"name": "event-number", "valueInteger": 7},
                         {"name": "timestamp", "valueDate": "2026-11-27"},
                         {"name": "focus", "valueReference": {
                             "reference": "ServiceRequest/ServiceRequest/123"}}]
    bundle["entry"] = [resource, status]
    return bundle


def test_lenient_hapi_shape() -> None:
    note = parse_notification("POST", "", hapi_variant())
    assert note.type == "event-notification"
    assert note.events_since_start == "7"
    assert [(e.event_number, e.focus, e.timestamp) for e in note.events] == \
        [("7", "ServiceRequest/123", "2026-11-27")]
    assert [r["resourceType"] for r in note.resources] == ["Encounter"]


def test_flattened_camel_case_parameters() -> None:
    bundle = {"resourceType": "Bundle", "type": "history", "entry": [{"resource": {
        "resourceType": "Parameters", "parameter": [
            {"name": "subscription", "valueReference": {"reference": "Subscription/9"}},
            {"name": "type", "valueCode": "event-notification"},
            {"name": "status", "valueCode": "active"},
            {"name": "eventNumber", "valueString": "4"},
            {"name": "focus", "valueReference": {
                "reference": "http://ehr/fhir/ServiceRequest/5/_history/2"}}]}}]}
    note = parse_notification("POST", "", bundle)
    assert [(e.event_number, e.focus) for e in note.events] == [("4", "ServiceRequest/5")]
    assert note.subscription == "Subscription/9"


def test_classic_put_of_a_resource() -> None:
    resource = {"resourceType": "ServiceRequest", "id": "42", "meta": {"versionId": "3"},
                "status": "active"}
    note = parse_notification("PUT", "ServiceRequest/42", resource)
    assert (note.shape, note.type) == ("resource", "event-notification")
    assert [(e.event_number, e.focus) for e in note.events] == [(None, "ServiceRequest/42")]
    assert note.resources == (resource,)


def test_bare_resource_post_and_empty_ping_and_delete() -> None:
    posted = parse_notification("POST", "", {"resourceType": "ServiceRequest", "id": "x1"})
    assert posted.events[0].focus == "ServiceRequest/x1"
    ping = parse_notification("POST", "", None)
    assert (ping.shape, ping.type, ping.events[0].focus) == ("empty", "event-notification", None)
    gone = parse_notification("DELETE", "ServiceRequest/77", None)
    assert (gone.type, gone.events[0].focus) == ("deletion", "ServiceRequest/77")


@pytest.mark.parametrize("method,path,body,words", [
    ("PUT", "ServiceRequest/1", {"resourceType": "Patient", "id": "1"}, "names ServiceRequest"),
    ("PUT", "ServiceRequest/1", {"resourceType": "ServiceRequest", "id": "2"}, "id 1"),
    ("POST", "", {"hello": "world"}, "no resourceType"),
    ("POST", "", ["not", "an", "object"], "no resourceType"),
    ("POST", "", {"resourceType": "Bundle", "type": "history", "entry": []}, "status entry"),
    ("POST", "", {"resourceType": "ServiceRequest"}, "no valid id"),
    ("PUT", "ServiceRequest/1", None, "needs a resource body"),
    ("DELETE", "", None, "DELETE needs"),
    ("DELETE", "Foo/1", None, "'Foo' is not a FHIR resource type"),
    ("DELETE", "ServiceRequest/" + "1" * 100, None, "is not a valid FHIR id"),
    ("POST", "", {"resourceType": "Bundle", "type": "history", "entry": [{"resource": {
        "resourceType": "Parameters", "parameter": [{"name": "type", "valueCode": "bogus"}]}}]},
     "unknown notification type"),
])
def test_bad_input_is_an_inbound_error(method: str, path: str, body: Any, words: str) -> None:
    with pytest.raises(InboundError, match=words):
        parse_notification(method, path, body)


@pytest.mark.parametrize("reference,expected", [
    ("https://ehr.example/fhir/ServiceRequest/1", "ServiceRequest/1"),
    ("ServiceRequest/1/_history/4", "ServiceRequest/1"),
    ("ServiceRequest/ServiceRequest/123", "ServiceRequest/123"),
    ("urn:uuid:0b2d", None),
    ("1", None),
    ("", None),
    (None, None),
])
def test_to_relative_reference(reference: str | None, expected: str | None) -> None:
    assert to_relative_reference(reference) == expected
