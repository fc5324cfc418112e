"""The notification endpoint: `/hooks/<hook-id>` and every path below it.

Authenticate the hook's secret (401, nothing stored), read the body within the size cap, parse it
(bad input: 4xx OperationOutcome and the input kept in quarantine), store it raw in the inbox with
its work item, and only then answer in the form the sender expects. Handshakes and heartbeats only
update the registration's health. The work itself runs later (processing.py).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from flask import Blueprint, Response, request
from werkzeug.wsgi import get_content_length

from referrals.errors import InboundError
from referrals.store.database import Database
from referrals.store.inbox import Inbox
from subscriptions.batched_inbox import BatchedInbox
from subscriptions.notification import (
    EVENT,
    HANDSHAKE,
    HEARTBEAT,
    Notification,
    parse_notification,
)
from subscriptions.outcome import build_operation_outcome, build_transaction_response
from subscriptions.registry import Hook, Registry

CHANNEL = "fhir-subscription"
WORK_KIND = "subscriptions.notification"
FHIR_JSON = "application/fhir+json"
#: Headers stored with a notification, by WSGI environ key (never Authorization).
KEPT_HEADERS = {"CONTENT_TYPE": "Content-Type", "HTTP_IF_MATCH": "If-Match",
                "HTTP_USER_AGENT": "User-Agent", "CONTENT_LENGTH": "Content-Length"}
METHODS = ["POST", "PUT", "DELETE"]
#: The routes (also the `path` of the request log line).
ROOT_RULE = "/hooks/<hook_id>"
PATH_RULE = "/hooks/<hook_id>/<path:subpath>"

log = logging.getLogger("refloop.subscriptions.hook")

#: A reply: HTTP status and the body (application/fhir+json).
Reply = tuple[int, bytes]
#: Opens the request body stream (called only once the hook is authenticated).
OpenStream = Callable[[], IO[bytes]]


@dataclass
class HookEndpoint:
    registry: Registry
    inbox: Inbox
    db: Database
    max_body_bytes: int
    writer: BatchedInbox = field(init=False)

    def __post_init__(self) -> None:
        self.writer = BatchedInbox(self.inbox, self.db, self.registry)

    def handle(self, method: str, environ: dict[str, Any], open_stream: OpenStream,
               hook_id: str, subpath: str) -> Reply:
        """Answer one request to `/hooks/<hook_id>[/<subpath>]`; `environ` is its WSGI environ
        (headers are read from it), `open_stream` gives its size-checked body stream."""
        hook = self.registry.try_get_hook(hook_id, cached=True)
        if hook is None or not _authentic(hook, environ.get("HTTP_AUTHORIZATION", "")):
            log.warning("hook: unauthenticated notification refused",
                        extra={"hook": hook_id[:6], "known": hook is not None})
            return 401, UNAUTHENTICATED
        raw, too_big = self._read_body(environ, open_stream)
        content_type = environ.get("CONTENT_TYPE", "")
        if too_big:
            return self._refuse(hook, environ, raw, 413, "too-costly",
                                f"body larger than {self.max_body_bytes} bytes (first bytes kept)")
        try:
            body = _decode(raw, content_type)
            note = parse_notification(method, subpath, body)
        except InboundError as exc:
            return self._refuse(hook, environ, raw, exc.status, exc.code, str(exc))
        return self._store(hook, note, environ, raw, method, subpath)

    def _read_body(self, environ: dict[str, Any], open_stream: OpenStream) -> tuple[bytes, bool]:
        declared = get_content_length(environ)
        stream = open_stream()
        if declared is not None and declared > self.max_body_bytes:
            return stream.read(self.max_body_bytes), True
        raw = stream.read(self.max_body_bytes + 1)
        return raw[: self.max_body_bytes], len(raw) > self.max_body_bytes

    def _refuse(self, hook: Hook, environ: dict[str, Any], raw: bytes, status: int, code: str,
                reason: str) -> Reply:
        inbox_id = self.inbox.reject(CHANNEL, hook.server, raw, f"hook {hook.id[:6]}: {reason}",
                                     content_type=environ.get("CONTENT_TYPE", "")[:128],
                                     headers=_headers(environ))
        log.warning("hook: bad notification quarantined",
                    extra={"hook": hook.id[:6], "inbox_id": inbox_id, "why": code})
        return status, json.dumps(build_operation_outcome("error", code, reason)).encode()

    def _store(self, hook: Hook, note: Notification, environ: dict[str, Any], raw: bytes,
               method: str, subpath: str) -> Reply:
        payload = {"hook_id": hook.id, "method": method, "subpath": subpath}
        message: dict[str, Any] = {"channel": CHANNEL, "sender": hook.server, "body": raw,
                                   "content_type": environ.get("CONTENT_TYPE", "")[:128],
                                   "headers": _headers(environ)}
        if note.type in (HANDSHAKE, HEARTBEAT):
            self.writer.accept({**message, "work_kind": None, "status": "processed"},
                               health=(hook.id, note.type))
        else:
            kind = WORK_KIND if note.starts_work else None
            self.writer.accept({**message, "work_kind": kind, "work_payload": payload,
                                "dedupe_key": dedupe_key(hook.id, note, raw),
                                "status": "received" if kind else "processed"})
        if note.shape in ("backport-r4", "backport-r4b", "r5"):
            return 200, STORED_BUNDLE
        return 200, STORED_OUTCOME


def dedupe_key(hook_id: str, note: Notification, raw: bytes) -> str | None:
    """Same hook + same event (number, focus, version) -> same key; None for pings."""
    if note.shape == "empty":
        return None
    if note.shape == "delete":
        return f"{CHANNEL}|{hook_id}|delete|{note.events[0].focus}"
    if note.type != EVENT:
        return None
    parts = []
    for event in note.events:
        carried = note.resource_for(event.focus) if event.focus else None
        version = _version(carried) if carried else None
        parts.append([event.event_number, event.focus, version or event.timestamp])
    if note.shape == "resource" and parts[0][2] is None:
        parts[0][2] = hashlib.sha256(raw).hexdigest()[:32]
    digest = hashlib.sha256(json.dumps([note.subscription, parts]).encode()).hexdigest()[:40]
    return f"{CHANNEL}|{hook_id}|{digest}"


def _version(resource: dict[str, Any]) -> str | None:
    meta = resource.get("meta") or {}
    version = meta.get("versionId") if isinstance(meta, dict) else None
    return str(version) if version else None


def _authentic(hook: Hook, header: str) -> bool:
    if hook.path_only:  # registered for a server that sends no headers
        return True
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), hook.secret.encode())


def _decode(raw: bytes, content_type: str) -> Any:
    if not raw.strip():
        return None
    if "xml" in content_type.lower():
        raise InboundError("XML notifications are not accepted; subscribe with "
                           "channel.payload = application/fhir+json", code="not-supported",
                           status=415)
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InboundError(f"the body is not valid JSON: {exc}", code="structure") from exc


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    return {name: str(environ[key])[:256] for key, name in KEPT_HEADERS.items()
            if environ.get(key)}


STORED_BUNDLE = json.dumps(build_transaction_response()).encode()
STORED_OUTCOME = json.dumps(build_operation_outcome("information", "informational",
                                                    "notification stored")).encode()
UNAUTHENTICATED = json.dumps(build_operation_outcome(
    "error", "login", "unknown hook or missing/wrong secret in the Authorization header; use "
    "the channel.header of the Subscription")).encode()


def hooks_blueprint(endpoint: HookEndpoint) -> Blueprint:
    blueprint = Blueprint("subscriptions_hooks", __name__)

    def answer(hook_id: str, subpath: str) -> Response:
        status, body = endpoint.handle(request.method, request.environ, lambda: request.stream,
                                       hook_id, subpath)
        return Response(body, status=status, mimetype=FHIR_JSON)

    @blueprint.route(ROOT_RULE, methods=METHODS, strict_slashes=False)
    def hook_root(hook_id: str) -> Response:
        return answer(hook_id, "")

    @blueprint.route(PATH_RULE, methods=METHODS)
    def hook_path(hook_id: str, subpath: str) -> Response:
        return answer(hook_id, subpath)

    return blueprint
