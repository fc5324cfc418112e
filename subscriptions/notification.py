"""Notifications as FHIR servers send them, parsed leniently into one shape.

Shapes (reference/subscriptions.md §1, §6.3): a bare resource (R4 classic
`PUT {endpoint}/{type}/{id}`, or POSTed), an empty POST (classic without payload),
`DELETE {endpoint}/{type}/{id}`, and notification Bundles whose status entry is a `Parameters`
(R4 backport) or a `SubscriptionStatus` (R4B backport, R5), found by type, not position, possibly
wrapped in a FHIR message Bundle. Numbers may be strings or integers, timestamps dates or
instants, focus references absolute, relative, versioned or with a doubled type.

Lenient about values, strict about structure: every element the parser reads is checked for its
JSON type before use, and a wrong type (`"entry": 5`, a parameter `name` that is an object, an
event number that is an object or 1.5, a reference that is not a string) is an InboundError
naming the path (`Bundle.entry[0].resource.parameter[2].name`), never a crash. A value of the
right type that cannot be used (an event number "-5" or of 30 digits, a relative reference we
cannot read) counts as absent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from referrals.errors import InboundError
from subscriptions.resource_types import RESOURCE_TYPES

EVENT, HANDSHAKE, HEARTBEAT, DELETION = "event-notification", "handshake", "heartbeat", "deletion"
TYPES = frozenset({EVENT, HANDSHAKE, HEARTBEAT, "query-status", "query-event"})
STATUS_TYPES = frozenset({"Parameters", "SubscriptionStatus"})
STATUS_NAMES = frozenset({"type", "status", "subscription"})
#: a message Bundle may wrap a notification Bundle; deeper wrapping is refused
MAX_BUNDLE_NESTING = 2
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


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
        if len(parts) < 2:
            raise InboundError("DELETE needs {endpoint}/{type}/{id}", code="not-supported")
        if parts[-2] not in RESOURCE_TYPES:
            raise InboundError(f"{parts[-2][:64]!r} is not a FHIR resource type",
                               code="structure")
        focus = _path_focus(parts)
        if focus is None:
            raise InboundError(f"{parts[-1][:64]!r}... is not a valid FHIR id (1-64 letters, "
                               "digits, '-' and '.')", code="structure")
        return Notification("delete", DELETION, events=(NotificationEvent(None, focus),))
    if body is None:
        if parts:
            raise InboundError(f"{method} of {'/'.join(parts)} needs a resource body",
                               code="required")
        return Notification("empty", EVENT, events=(NotificationEvent(None, None),))
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        raise InboundError("the body is not a FHIR resource (no resourceType)",
                           code="structure", expression="resourceType")
    _check_type(body["resourceType"], "resourceType")
    if body["resourceType"] == "Bundle":
        return parse_notification_bundle(body)
    return _parse_resource(body, parts)


def parse_notification_bundle(bundle: dict[str, Any], path: str = "Bundle",
                              nesting: int = 0) -> Notification:
    """A notification Bundle (history, subscription-notification, or a message around one)."""
    entries = _objects(bundle, "entry", path)
    kind = _optional_str(bundle, "type", path)
    if kind == "message":
        inner = _inner_bundle(entries, path)
        if inner is not None:
            if nesting + 1 >= MAX_BUNDLE_NESTING:
                raise InboundError("a message Bundle may wrap one notification Bundle, not more",
                                   code="structure", expression=inner[1])
            return parse_notification_bundle(inner[0], inner[1], nesting + 1)
    resources = [_entry_resource(entry, f"{path}.entry[{i}]") for i, entry in enumerate(entries)]
    status_index = _status_index(resources, path)
    if status_index is None:
        raise InboundError("the Bundle has no subscription status entry (Parameters or "
                           "SubscriptionStatus)", code="structure", expression=f"{path}.entry")
    status = resources[status_index]
    assert status is not None  # found by _status_index
    where = f"{path}.entry[{status_index}].resource"
    others = tuple(r for i, r in enumerate(resources) if i != status_index and r is not None)
    if status["resourceType"] == "Parameters":
        fields = _from_parameters(status, where)
        shape = "backport-r4"
    else:
        fields = _from_status_resource(status, where)
        shape = "r5" if kind == "subscription-notification" else "backport-r4b"
    note_type = fields.pop("type") or EVENT
    if note_type not in TYPES:
        raise InboundError(f"unknown notification type {note_type!r}", code="code-invalid",
                           expression=f"{where}.type")
    return Notification(shape, note_type, resources=others, **fields)


def to_relative_reference(reference: str | None) -> str | None:
    """"Type/id" from an absolute, relative, versioned or doubled-type reference; else None."""
    if not isinstance(reference, str) or not reference or reference.startswith(("urn:", "#")):
        return None
    parts = [p for p in reference.split("?")[0].split("/") if p]
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2 or not _TYPE.match(parts[-2]) or not _ID.match(parts[-1]):
        return None
    return f"{parts[-2]}/{parts[-1]}"


# -- structure: typed access that names the path of a wrong type ------------------------------

def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _wrong(path: str, wanted: str, value: Any) -> InboundError:
    return InboundError(f"{path} must be {wanted}, not {_kind(value)}", code="structure",
                        expression=path)


def _objects(container: dict[str, Any], key: str, path: str) -> list[dict[str, Any]]:
    """`container[key]` as an array of objects (absent or null: empty)."""
    value = container.get(key)
    where = f"{path}.{key}"
    if value is None:
        return []
    if not isinstance(value, list):
        raise _wrong(where, "an array", value)
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise _wrong(f"{where}[{index}]", "an object", item)
    return value


def _optional_object(container: dict[str, Any], key: str, path: str) -> dict[str, Any] | None:
    value = container.get(key)
    if value is None or isinstance(value, dict):
        return value
    raise _wrong(f"{path}.{key}", "an object", value)


def _optional_str(container: dict[str, Any], key: str, path: str) -> str | None:
    value = container.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _wrong(f"{path}.{key}", "a string", value)


def _check_type(name: str, path: str) -> None:
    if name not in RESOURCE_TYPES:
        raise InboundError(f"{name[:64]!r} is not a FHIR resource type", code="structure",
                           expression=path)


def _entry_resource(entry: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The entry's resource, its resourceType checked; None for an entry without one."""
    resource = _optional_object(entry, "resource", path)
    if resource is None:
        return None
    name = _optional_str(resource, "resourceType", f"{path}.resource")
    if name is None:
        raise InboundError(f"{path}.resource has no resourceType", code="structure",
                           expression=f"{path}.resource.resourceType")
    _check_type(name, f"{path}.resource.resourceType")
    return resource


def _inner_bundle(entries: list[dict[str, Any]], path: str
                  ) -> tuple[dict[str, Any], str] | None:
    for index, entry in enumerate(entries):
        where = f"{path}.entry[{index}]"
        resource = _entry_resource(entry, where)
        if resource is not None and resource["resourceType"] == "Bundle":
            return resource, f"{where}.resource"
    return None


# -- shapes ------------------------------------------------------------------------------------

def _path_focus(parts: list[str]) -> str | None:
    if len(parts) < 2:
        return None
    return to_relative_reference("/".join(parts[-2:]))


def _parse_resource(resource: dict[str, Any], parts: list[str]) -> Notification:
    rtype = resource["resourceType"]
    if rtype in STATUS_TYPES and _looks_like_status(resource, rtype):
        raise InboundError("a subscription status must come inside a notification Bundle",
                           code="structure", expression=rtype)
    rid = resource.get("id")
    if rid is not None and not isinstance(rid, str):
        raise _wrong(f"{rtype}.id", "a string", rid)
    meta = _optional_object(resource, "meta", rtype)
    if meta is not None:
        _optional_str(meta, "versionId", f"{rtype}.meta")
        _optional_str(meta, "lastUpdated", f"{rtype}.meta")
    if not isinstance(rid, str) or not _ID.match(rid):
        if len(parts) >= 2:
            rid = parts[-1]
        else:
            raise InboundError("the resource has no valid id", code="required",
                               expression=f"{rtype}.id")
    if parts and parts[0] != rtype:
        raise InboundError(f"the path names {parts[0][:64]} but the body is a {rtype}",
                           code="structure", expression="resourceType")
    if len(parts) >= 2 and parts[1] != rid:
        raise InboundError(f"the path names id {parts[1][:64]} but the body has id {rid}",
                           code="structure", expression=f"{rtype}.id")
    focus = f"{rtype}/{rid}"
    return Notification("resource", EVENT, events=(NotificationEvent(None, focus),),
                        resources=({**resource, "id": rid},))


def _status_index(resources: list[dict[str, Any] | None], path: str) -> int | None:
    for index, resource in enumerate(resources):
        if resource is not None and resource["resourceType"] in STATUS_TYPES and \
                _looks_like_status(resource, f"{path}.entry[{index}].resource"):
            return index
    return None


def _looks_like_status(resource: dict[str, Any], path: str) -> bool:
    if resource["resourceType"] == "SubscriptionStatus":
        return True
    return any(_name(p, f"{path}.parameter[{i}]") in STATUS_NAMES
               for i, p in enumerate(_objects(resource, "parameter", path)))


def _name(param: dict[str, Any], path: str) -> str:
    """A parameter's name in kebab case (eventNumber -> event-number)."""
    name = param.get("name")
    if not isinstance(name, str):
        raise _wrong(f"{path}.name", "a string", name)
    return _CAMEL.sub(r"-\1", name).lower()


def _from_parameters(parameters: dict[str, Any], path: str) -> dict[str, Any]:
    params = [(f"{path}.parameter[{i}]", p)
              for i, p in enumerate(_objects(parameters, "parameter", path))]
    named = [(_name(p, where), where, p) for where, p in params]
    first: dict[str, tuple[Any, str]] = {}
    for name, where, p in named:
        first.setdefault(name, _value(p, where))
    events = [_event_from_parts(_objects(p, "part", where), f"{where}.part")
              for name, where, p in named if name == "notification-event"]
    if not events and ("event-number" in first or "focus" in first):
        # flattened: the event's parts at the top level
        events = [_event_from_parts([p for _w, p in params], f"{path}.parameter")]
    errors = [_text(*_value(p, where)) for name, where, p in named if name == "error"]
    return {"type": _text(*first.get("type", _ABSENT)),
            "status": _text(*first.get("status", _ABSENT)),
            "subscription": _reference(*first.get("subscription", _ABSENT)),
            "topic": _text(*first.get("topic", _ABSENT)),
            "events_since_start": _number(*first.get("events-since-subscription-start",
                                                     _ABSENT)),
            "events": tuple(events), "errors": tuple(e for e in errors if e)}


def _event_from_parts(parts: list[dict[str, Any]], path: str) -> NotificationEvent:
    values: dict[str, tuple[Any, str]] = {}
    for index, part in enumerate(parts):
        where = f"{path}[{index}]"
        values.setdefault(_name(part, where), _value(part, where))
    return NotificationEvent(_number(*values.get("event-number", _ABSENT)),
                             to_relative_reference(_reference(*values.get("focus", _ABSENT))),
                             _text(*values.get("timestamp", _ABSENT)))


def _from_status_resource(status: dict[str, Any], path: str) -> dict[str, Any]:
    events = []
    for index, item in enumerate(_objects(status, "notificationEvent", path)):
        where = f"{path}.notificationEvent[{index}]"
        events.append(NotificationEvent(
            _number(item.get("eventNumber"), f"{where}.eventNumber"),
            to_relative_reference(_reference(item.get("focus"), f"{where}.focus")),
            _text(item.get("timestamp"), f"{where}.timestamp")))
    raw_errors = status.get("error")
    if raw_errors is not None and not isinstance(raw_errors, list):
        raise _wrong(f"{path}.error", "an array", raw_errors)
    errors = [_text(e, f"{path}.error[{i}]") for i, e in enumerate(raw_errors or [])]
    return {"type": _text(status.get("type"), f"{path}.type"),
            "status": _text(status.get("status"), f"{path}.status"),
            "subscription": _reference(status.get("subscription"), f"{path}.subscription"),
            "topic": _text(status.get("topic"), f"{path}.topic"),
            "events_since_start": _number(status.get("eventsSinceSubscriptionStart"),
                                          f"{path}.eventsSinceSubscriptionStart"),
            "events": tuple(events), "errors": tuple(e for e in errors if e)}


# -- values: their JSON type checked, their content read leniently ------------------------------

#: (value, path) of a parameter that is not there
_ABSENT: tuple[Any, str] = (None, "")


def _value(param: dict[str, Any], path: str) -> tuple[Any, str]:
    """A parameter's value[x] and its path."""
    for key, value in param.items():
        if key.startswith("value"):
            return value, f"{path}.{key}"
    return None, f"{path}.value[x]"


def _reference(value: Any, path: str) -> str | None:
    """A Reference's `reference` (or a canonical string); a wrong JSON type is refused."""
    if isinstance(value, dict):
        ref = value.get("reference")
        if ref is None or isinstance(ref, str):
            return ref
        raise _wrong(f"{path}.reference", "a string", ref)
    if value is None or isinstance(value, str):
        return value
    raise _wrong(path, "a Reference", value)


def _number(value: Any, path: str) -> str | None:
    """An event number or count: a whole number or a string; one outside 0..10^20 or not all
    digits counts as absent. Any other JSON type (1.5, an object, true) is refused."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value) if 0 <= value < 10 ** 20 else None
    if not isinstance(value, str):
        raise _wrong(path, "a whole number or a string", value)
    text = value.strip()
    return text if text.isascii() and text.isdigit() and len(text) <= 20 else None


def _text(value: Any, path: str) -> str | None:
    """A code or string; from a CodeableConcept or Coding its first code (or text). A number,
    boolean or array is refused."""
    if value is None:
        return None
    if isinstance(value, dict):
        codings = value.get("coding")
        first = codings[0] if isinstance(codings, list) and codings else value
        code = first.get("code") if isinstance(first, dict) else None
        found = code if isinstance(code, str) and code else value.get("text")
        return found[:1000] if isinstance(found, str) and found else None
    if not isinstance(value, str):
        raise _wrong(path, "a string or a Coding", value)
    return value[:1000]
