"""Wrong JSON types anywhere in a notification are InboundErrors naming the path (never a
crash), and property-based tests: whatever JSON value comes in, the parser returns a
Notification or raises InboundError."""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from referrals.errors import InboundError
from subscriptions.json_body import parse_json
from subscriptions.notification import parse_notification

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "subscriptions"
R4 = json.loads((FIXTURES / "backport-1.1.0/r4/Bundle-r4-notification-full-resource.json")
                .read_text())
R4B = json.loads((FIXTURES / "backport-1.1.0/r4b/Bundle-r4b-notification-full-resource.json")
                 .read_text())


def with_value(bundle: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(bundle)
    target = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return changed


def message_around(inner: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "message", "entry": [
        {"resource": {"resourceType": "MessageHeader", "id": "m"}}, {"resource": inner}]}


PARAMS = ["entry", 0, "resource", "parameter"]
EVENT = [*PARAMS, 5]  # the notification-event parameter of the R4 example
STATUS = ["entry", 0, "resource"]

ARRAY = [5, "text", True, 1.5, {"a": 1}]
OBJECT = [5, "text", True, 1.5, [1]]
STRING = [5, True, 1.5, {"a": 1}, [1]]
REFERENCE = [5, True, 1.5, [1]]
NUMBER = [{"x": 1}, 1.5, True, [1]]  # a string or a whole number; "-5" is lenient (absent)
CODE = [5, True, [1]]  # a string, or a Coding / CodeableConcept

#: (bundle, path to replace, expected expression in the OperationOutcome, wrong values)
CASES = [
    (R4, ["entry"], "Bundle.entry", ARRAY),
    (R4, ["entry", 0], "Bundle.entry[0]", OBJECT),
    (R4, ["entry", 0, "resource"], "Bundle.entry[0].resource", OBJECT),
    (R4, ["entry", 0, "resource", "resourceType"], "Bundle.entry[0].resource.resourceType",
     STRING),
    (R4, PARAMS, "Bundle.entry[0].resource.parameter", ARRAY),
    (R4, [*PARAMS, 0], "Bundle.entry[0].resource.parameter[0]", OBJECT),
    (R4, [*PARAMS, 0, "name"], "Bundle.entry[0].resource.parameter[0].name", STRING),
    (R4, [*EVENT, "part"], "Bundle.entry[0].resource.parameter[5].part", ARRAY),
    (R4, [*EVENT, "part", 0], "Bundle.entry[0].resource.parameter[5].part[0]", OBJECT),
    (R4, [*EVENT, "part", 0, "name"], "Bundle.entry[0].resource.parameter[5].part[0].name",
     STRING),
    (R4, ["type"], "Bundle.type", STRING),
    (R4B, [*STATUS, "notificationEvent"], "Bundle.entry[0].resource.notificationEvent", ARRAY),
    (R4B, [*STATUS, "notificationEvent", 0], "Bundle.entry[0].resource.notificationEvent[0]",
     OBJECT),
    (R4B, [*STATUS, "notificationEvent", 0, "focus"],
     "Bundle.entry[0].resource.notificationEvent[0].focus", REFERENCE),
    (R4B, [*STATUS, "error"], "Bundle.entry[0].resource.error", ARRAY),
    # values the parser reads
    (R4, [*EVENT, "part", 0, "valueString"],
     "Bundle.entry[0].resource.parameter[5].part[0].valueString", NUMBER),
    (R4, [*EVENT, "part", 2, "valueReference"],
     "Bundle.entry[0].resource.parameter[5].part[2].valueReference", REFERENCE),
    (R4, [*EVENT, "part", 2, "valueReference", "reference"],
     "Bundle.entry[0].resource.parameter[5].part[2].valueReference.reference", [5, ["x"], {}]),
    (R4, [*PARAMS, 2, "valueCode"], "Bundle.entry[0].resource.parameter[2].valueCode", CODE),
    (R4, [*PARAMS, 4, "valueString"], "Bundle.entry[0].resource.parameter[4].valueString",
     NUMBER),
    (R4B, [*STATUS, "notificationEvent", 0, "eventNumber"],
     "Bundle.entry[0].resource.notificationEvent[0].eventNumber", NUMBER),
    (R4B, [*STATUS, "notificationEvent", 0, "focus", "reference"],
     "Bundle.entry[0].resource.notificationEvent[0].focus.reference", [5, ["x"], {}]),
    (R4B, [*STATUS, "status"], "Bundle.entry[0].resource.status", CODE),
    (R4B, [*STATUS, "subscription"], "Bundle.entry[0].resource.subscription", REFERENCE),
    (R4B, [*STATUS, "subscription", "reference"],
     "Bundle.entry[0].resource.subscription.reference", [5, {}]),
    (R4B, [*STATUS, "eventsSinceSubscriptionStart"],
     "Bundle.entry[0].resource.eventsSinceSubscriptionStart", NUMBER),
]
ROWS = [(bundle, path, expression, wrong) for bundle, path, expression, values in CASES
        for wrong in values]


@pytest.mark.parametrize("bundle,path,expression,wrong", ROWS)
def test_a_wrong_type_names_its_path(bundle: dict[str, Any], path: list[Any], expression: str,
                                     wrong: Any) -> None:
    with pytest.raises(InboundError) as raised:
        parse_notification("POST", "", with_value(bundle, path, wrong))
    assert raised.value.status == 400
    assert raised.value.expression == expression
    assert expression in str(raised.value) or "resourceType" in expression


@pytest.mark.parametrize("field,value,expression", [
    ("id", 5, "ServiceRequest.id"),
    ("meta", 5, "ServiceRequest.meta"),
    ("meta", {"versionId": {}}, "ServiceRequest.meta.versionId"),
    ("meta", {"lastUpdated": 5}, "ServiceRequest.meta.lastUpdated"),
])
def test_a_bare_resource_with_a_wrong_type_names_its_path(field: str, value: Any,
                                                          expression: str) -> None:
    body = {"resourceType": "ServiceRequest", "id": "sr1", field: value}
    with pytest.raises(InboundError) as raised:
        parse_notification("PUT", "ServiceRequest/sr1", body)
    assert (raised.value.status, raised.value.expression) == (400, expression)


def test_unusable_values_of_the_right_type_count_as_absent() -> None:
    for number in ("-5", "99999999999999999999999999", " 12x", -5):
        bundle = with_value(R4B, [*STATUS, "notificationEvent", 0, "eventNumber"], number)
        assert parse_notification("POST", "", bundle).events[0].event_number is None
    bundle = with_value(R4B, [*STATUS, "notificationEvent", 0, "focus"], {"reference": "#x"})
    assert parse_notification("POST", "", bundle).events[0].focus is None


def test_inner_bundle_paths_are_named() -> None:
    inner = with_value(R4, ["entry"], 5)
    with pytest.raises(InboundError) as raised:
        parse_notification("POST", "", message_around(inner))
    assert raised.value.expression == "Bundle.entry[1].resource.entry"


def test_message_bundles_nest_once_only() -> None:
    with pytest.raises(InboundError, match="not more"):
        parse_notification("POST", "", message_around(message_around(R4)))
    assert parse_notification("POST", "", message_around(R4)).type == "event-notification"


def test_unknown_resource_type_and_null_body() -> None:
    with pytest.raises(InboundError, match="not a FHIR resource type"):
        parse_notification("POST", "", {"resourceType": "Foo", "id": "1"})
    with pytest.raises(InboundError, match="JSON null"):
        from subscriptions.endpoint import _decode
        _decode(b"null", "application/fhir+json", 200)


@pytest.mark.parametrize("depth,ok", [(199, True), (200, True), (201, False), (2000, False),
                                      (10000, False)])
def test_json_depth_limit(depth: int, ok: bool) -> None:
    raw = b"[" * depth + b"]" * depth
    if ok:
        assert parse_json(raw) is not None
    else:
        with pytest.raises(InboundError, match="nested deeper than 200"):
            parse_json(raw)


@pytest.mark.parametrize("raw", [b"NaN", b'{"a": Infinity}', b'{"a": -Infinity}',
                                 b'{"a": 1e999}', '{"a": 1}'.encode("utf-16"),
                                 '{"a": 1}'.encode("utf-32-le"), b'{"a": "\xe9"}'])
def test_only_rfc_8259_json_in_utf_8(raw: bytes) -> None:
    with pytest.raises(InboundError, match="not valid JSON"):
        parse_json(raw)
    assert parse_json(b'\xef\xbb\xbf{"a": 1e300}') == {"a": 1e300}  # a BOM is tolerated


def test_brackets_inside_strings_do_not_count() -> None:
    raw = json.dumps({"text": "[" * 500, "escaped": "\\\"[[[" * 100}).encode()
    assert parse_json(raw)["text"] == "[" * 500


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["resourceType", "type", "entry", "resource", "parameter", "name",
                         "part", "valueString", "valueCode", "valueReference", "reference",
                         "notificationEvent", "focus", "eventNumber", "error", "id", "status",
                         "subscription", "coding", "code"]), inner, max_size=5),
    max_leaves=30)


def shaped() -> st.SearchStrategy[Any]:
    """Notification-shaped bodies with any JSON value in the places the parser reads."""
    part = st.fixed_dictionaries({"name": st.sampled_from(["event-number", "focus", "timestamp"])
                                  | JSON, "valueString": JSON})
    parameter = st.fixed_dictionaries({
        "name": st.sampled_from(["type", "status", "subscription", "notification-event",
                                 "error", "eventNumber"]) | JSON,
        "valueCode": JSON, "part": st.lists(part, max_size=3) | JSON})
    status = st.fixed_dictionaries({"resourceType": st.sampled_from(
        ["Parameters", "SubscriptionStatus", "Bundle"]), "parameter": st.lists(
            parameter, max_size=4) | JSON, "notificationEvent": st.lists(JSON, max_size=3),
        "error": JSON, "type": JSON})
    entry = st.fixed_dictionaries({"resource": status | JSON})
    return st.fixed_dictionaries({"resourceType": st.just("Bundle"),
                                  "type": st.sampled_from(["history", "message",
                                                           "subscription-notification"]),
                                  "entry": st.lists(entry, max_size=3) | JSON})


@settings(max_examples=400, deadline=None)
@given(body=JSON, method=st.sampled_from(["POST", "PUT", "DELETE"]),
       subpath=st.sampled_from(["", "ServiceRequest/1", "ServiceRequest", "a/b/c"]))
def test_any_json_is_parsed_or_refused(body: Any, method: str, subpath: str) -> None:
    with contextlib.suppress(InboundError):
        parse_notification(method, subpath, body)


@settings(max_examples=400, deadline=None)
@given(body=shaped())
def test_any_notification_shape_is_parsed_or_refused(body: Any) -> None:
    try:
        note = parse_notification("POST", "", body)
    except InboundError as exc:
        assert exc.status in (400, 415) and str(exc)
        return
    assert note.type in ("event-notification", "handshake", "heartbeat", "query-status",
                         "query-event")


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200))
def test_any_bytes_are_parsed_or_refused(raw: bytes) -> None:
    with contextlib.suppress(InboundError):
        parse_json(raw)
