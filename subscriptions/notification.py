"""Notifications as FHIR servers send them, parsed leniently into one shape.

Shapes (reference/subscriptions.md §1, §6.3): a bare resource (R4 classic
`PUT {endpoint}/{type}/{id}`, or POSTed), an empty POST (classic without payload),
`DELETE {endpoint}/{type}/{id}`, and notification Bundles whose status entry is a `Parameters`
(R4 backport) or a `SubscriptionStatus` (R4B backport, R5), found by type, not position, possibly
wrapped in a FHIR message Bundle. Numbers may be strings or integers, timestamps dates or
instants, focus references absolute, relative, versioned or with a doubled type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from referrals.errors import InboundError

EVENT, HANDSHAKE, HEARTBEAT, DELETION = "event-notification", "handshake", "heartbeat", "deletion"
TYPES = frozenset({EVENT, HANDSHAKE, HEARTBEAT, "query-status", "query-event"})
STATUS_TYPES = frozenset({"Parameters", "SubscriptionStatus"})
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")


@dataclass(frozen=True)
class NotificationEvent:
    event_number: str | None
    focus: str | None  # "Type/id" (relative, unversioned) or None (empty content)
    timestamp: str | None = None


@dataclass(frozen=True)
class Notification:
    """What a notification says, whatever its shape."""

    shape: str  # resource | empty | delete | backport-r4 | backport-r4b | r5
    type: str   # event-notification | handshake | heartbeat | query-status | query-event | deletion
    status: str | None = None
    subscription: str | None = None
    topic: str | None = None
    events_since_start: str | None = None
    events: tuple[NotificationEvent, ...] = ()
    resources: tuple[dict[str, Any], ...] = field(default=())
    errors: tuple[str, ...] = ()

    @property
    def starts_work(self) -> bool:
        return self.type in (EVENT, DELETION)

    def resource_for(self, focus: str) -> dict[str, Any] | None:
        """The full resource carried for `focus` ("Type/id"), if the notification has it."""
        for resource in self.resources:
            if f"{resource.get('resourceType')}/{resource.get('id')}" == focus:
                return resource
        return None


def parse_notification(method: str, subpath: str, body: Any) -> Notification:
    """Parse a request to a hook: `subpath` is what follows /hooks/<id> ("" or "Type/id").

    `body` is the decoded JSON (None when the request had no body). Raises InboundError.
    """
    method = method.upper()
    parts = [p for p in subpath.split("/") if p]
    if method == "DELETE":
        focus = _path_focus(parts)
        if focus is None:
            raise InboundError("DELETE needs {endpoint}/{type}/{id}", code="not-supported")
        return Notification("delete", DELETION, events=(NotificationEvent(None, focus),))
    if body is None:
        if parts:
            raise InboundError(f"{method} of {'/'.join(parts)} needs a resource body",
                               code="required")
        return Notification("empty", EVENT, events=(NotificationEvent(None, None),))
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        raise InboundError("the body is not a FHIR resource (no resourceType)",
                           code="structure")
    if body["resourceType"] == "Bundle":
        return parse_notification_bundle(body)
    return _parse_resource(body, parts)


def parse_notification_bundle(bundle: dict[str, Any]) -> Notification:
    """A notification Bundle (history, subscription-notification, or a message around one)."""
    entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict)]
    if bundle.get("type") == "message":
        inner = [e["resource"] for e in entries if isinstance(e.get("resource"), dict)
                 and e["resource"].get("resourceType") == "Bundle"]
        if inner:
            return parse_notification_bundle(inner[0])
    status_index = _status_index(entries)
    if status_index is None:
        raise InboundError("the Bundle has no subscription status entry (Parameters or "
                           "SubscriptionStatus)", code="structure")
    status = entries[status_index]["resource"]
    others = tuple(e["resource"] for i, e in enumerate(entries)
                   if i != status_index and isinstance(e.get("resource"), dict)
                   and e["resource"].get("resourceType"))
    if status["resourceType"] == "Parameters":
        fields = _from_parameters(status)
        shape = "backport-r4"
    else:
        fields = _from_status_resource(status)
        shape = "r5" if bundle.get("type") == "subscription-notification" else "backport-r4b"
    kind = fields.pop("type") or EVENT
    if kind not in TYPES:
        raise InboundError(f"unknown notification type {kind!r}", code="code-invalid")
    return Notification(shape, kind, resources=others, **fields)


def to_relative_reference(reference: str | None) -> str | None:
    """"Type/id" from an absolute, relative, versioned or doubled-type reference; else None."""
    if not reference or reference.startswith(("urn:", "#")):
        return None
    parts = [p for p in reference.split("?")[0].split("/") if p]
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2 or not _TYPE.match(parts[-2]) or not _ID.match(parts[-1]):
        return None
    return f"{parts[-2]}/{parts[-1]}"


def _path_focus(parts: list[str]) -> str | None:
    if len(parts) < 2:
        return None
    return to_relative_reference("/".join(parts[-2:]))


def _parse_resource(resource: dict[str, Any], parts: list[str]) -> Notification:
    if resource["resourceType"] in STATUS_TYPES and _looks_like_status(resource):
        raise InboundError("a subscription status must come inside a notification Bundle",
                           code="structure")
    rid = resource.get("id")
    if not isinstance(rid, str) or not _ID.match(rid):
        if len(parts) >= 2:
            rid = parts[-1]
        else:
            raise InboundError("the resource has no valid id", code="required")
    rtype = resource["resourceType"]
    if not _TYPE.match(rtype):
        raise InboundError(f"resourceType {rtype!r} is not a FHIR type", code="structure")
    if parts and parts[0] != rtype:
        raise InboundError(f"the path names {parts[0]} but the body is a {rtype}",
                           code="structure")
    if len(parts) >= 2 and parts[1] != rid:
        raise InboundError(f"the path names id {parts[1]} but the body has id {rid}",
                           code="structure")
    focus = f"{rtype}/{rid}"
    return Notification("resource", EVENT, events=(NotificationEvent(None, focus),),
                        resources=({**resource, "id": rid},))


def _status_index(entries: list[dict[str, Any]]) -> int | None:
    for index, entry in enumerate(entries):
        resource = entry.get("resource")
        if isinstance(resource, dict) and resource.get("resourceType") in STATUS_TYPES \
                and _looks_like_status(resource):
            return index
    return None


def _looks_like_status(resource: dict[str, Any]) -> bool:
    if resource["resourceType"] == "SubscriptionStatus":
        return True
    names = {p.get("name") for p in resource.get("parameter") or [] if isinstance(p, dict)}
    return bool(names & {"type", "status", "subscription"})


def _from_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    params = [p for p in parameters.get("parameter") or [] if isinstance(p, dict)]
    first: dict[str, Any] = {}
    for p in params:
        first.setdefault(_kebab(p.get("name", "")), _value(p))
    events = [_event_from_parts(p.get("part") or []) for p in params
              if _kebab(p.get("name", "")) == "notification-event"]
    if not events and ("event-number" in first or "focus" in first):
        events = [_event_from_parts(params)]  # flattened: the event's parts at the top level
    errors = [_text(_value(p)) for p in params if _kebab(p.get("name", "")) == "error"]
    return {"type": _text(first.get("type")), "status": _text(first.get("status")),
            "subscription": _reference(first.get("subscription")),
            "topic": _text(first.get("topic")),
            "events_since_start": _number(first.get("events-since-subscription-start")),
            "events": tuple(events), "errors": tuple(e for e in errors if e)}


def _event_from_parts(parts: list[Any]) -> NotificationEvent:
    values: dict[str, Any] = {}
    for part in parts:
        if isinstance(part, dict):
            values.setdefault(_kebab(part.get("name", "")), _value(part))
    return NotificationEvent(_number(values.get("event-number")),
                             to_relative_reference(_reference(values.get("focus"))),
                             _text(values.get("timestamp")))


def _from_status_resource(status: dict[str, Any]) -> dict[str, Any]:
    events = []
    for item in status.get("notificationEvent") or []:
        if isinstance(item, dict):
            events.append(NotificationEvent(
                _number(item.get("eventNumber")),
                to_relative_reference(_reference(item.get("focus"))),
                _text(item.get("timestamp"))))
    errors = [_text(e) for e in status.get("error") or []]
    return {"type": _text(status.get("type")), "status": _text(status.get("status")),
            "subscription": _reference(status.get("subscription")),
            "topic": _text(status.get("topic")),
            "events_since_start": _number(status.get("eventsSinceSubscriptionStart")),
            "events": tuple(events), "errors": tuple(e for e in errors if e)}


def _kebab(name: str) -> str:
    """eventNumber -> event-number; names already in kebab case stay."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"-\1", str(name)).lower()


def _value(param: dict[str, Any]) -> Any:
    for key, value in param.items():
        if key.startswith("value"):
            return value
    return None


def _reference(value: Any) -> str | None:
    if isinstance(value, dict):
        ref = value.get("reference")
        return ref if isinstance(ref, str) else None
    return value if isinstance(value, str) else None


def _number(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    text = str(value).strip()
    return text if text.isdigit() else None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):  # CodeableConcept (errors) or Coding
        codings = value.get("coding") or [value]
        coding = codings[0] if codings and isinstance(codings[0], dict) else {}
        return str(coding.get("code") or value.get("text") or "") or None
    return str(value)
