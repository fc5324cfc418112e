"""The notification endpoint: `/hooks/<hook-id>` and every path below it.

Authenticate the hook's secret (401, nothing stored) and apply its rate limit (429 with
Retry-After, nothing stored), read the complete body within the size cap, parse it (bad input:
4xx OperationOutcome naming what is wrong, and the input kept in quarantine), store it raw in the
inbox with its work item, and only then answer in the form the sender expects. Handshakes and
heartbeats only update the registration's health. The work itself runs later (processing.py).

Two servers call this: the HTTP edge of `refloop serve` (subscriptions/hook_edge.py: the body is
read by the edge, bounded in time and size, before any of this runs) and Flask (the blueprint at
the end: development servers and test clients). Both answer the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from flask import Blueprint, Response, request
from werkzeug.exceptions import ClientDisconnected
from werkzeug.wsgi import get_content_length

from referrals.errors import InboundError
from referrals.store.database import Database
from referrals.store.inbox import Inbox
from subscriptions.batched_inbox import BatchedInbox
from subscriptions.json_body import MAX_DEPTH, parse_json
from subscriptions.notification import (
    EVENT,
    HANDSHAKE,
    HEARTBEAT,
    Notification,
    parse_notification,
)
from subscriptions.outcome import build_operation_outcome, build_transaction_response
from subscriptions.rate import RateLimiter
from subscriptions.registry import Hook, Registry

CHANNEL = "fhir-subscription"
WORK_KIND = "subscriptions.notification"
FHIR_JSON = "application/fhir+json"
#: Headers stored with a notification, by lower-case name (never Authorization).
KEPT_HEADERS = {"content-type": "Content-Type", "if-match": "If-Match",
                "user-agent": "User-Agent", "content-length": "Content-Length"}
METHODS = ["POST", "PUT", "DELETE"]
#: The routes (also the `path` of the request log line).
ROOT_RULE = "/hooks/<hook_id>"
PATH_RULE = "/hooks/<hook_id>/<path:subpath>"
#: A cached hook whose secret does not match is read again when older than this (a rotation
#: made by another process shows at once, and wrong secrets cannot force a read per request).
RECHECK_SECONDS = 1.0
#: Why an incomplete body was not stored (the edge reports these), and the answer to each.
INCOMPLETE = {
    "truncated": (400, "incomplete", "the body ended before its Content-Length or last chunk "
                  "(connection closed); nothing was stored, send it again"),
    "framing": (400, "structure", "bad HTTP framing (chunk sizes or headers); nothing was "
                "stored"),
    "deadline": (408, "timeout", "the request was not complete within the server's request "
                 "deadline; nothing was stored, send it again"),
}

log = logging.getLogger("refloop.subscriptions.hook")

#: Opens the request body stream (called only once the hook is authenticated).
OpenStream = Callable[[], IO[bytes]]


@dataclass(frozen=True)
class Reply:
    """An answer: HTTP status, application/fhir+json body, extra headers."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Prepared:
    """A notification that parsed: what to store, and the answer once it is stored."""

    message: dict[str, Any]  # Inbox.accept's arguments
    health: tuple[str, str] | None
    reply: Reply


@dataclass
class HookEndpoint:
    registry: Registry
    inbox: Inbox
    db: Database
    max_body_bytes: int
    max_json_depth: int = MAX_DEPTH
    rate: RateLimiter = field(default_factory=lambda: RateLimiter(0, 1))
    writer: BatchedInbox = field(init=False)

    def __post_init__(self) -> None:
        self.writer = BatchedInbox(self.inbox, self.db, self.registry)

    # -- the steps, for any server ---------------------------------------------------------

    def admit(self, hook_id: str, authorization: str) -> Hook | Reply:
        """The hook, if the Authorization header carries its secret and its rate allows one
        more request; else the 401 or 429 answer (nothing is stored for either)."""
        token = _bearer(authorization)
        hook = self.registry.try_get_hook(hook_id, cached=True)
        accepted = hook is not None and hook.accepts(token)
        if hook is not None and not accepted:
            hook = self.registry.try_get_hook(hook_id, cached=True, max_age=RECHECK_SECONDS)
            accepted = hook is not None and hook.accepts(token)
        if hook is None or not accepted:
            log.warning("hook: unauthenticated notification refused",
                        extra={"hook": hook_id[:6], "known": hook is not None})
            return Reply(401, UNAUTHENTICATED)
        wait = self.rate.take(hook.id)
        if wait:
            log.warning("hook: rate limit reached", extra={"hook": hook.id[:6]})
            return Reply(429, RATE_LIMITED, (("Retry-After", str(max(1, math.ceil(wait)))),))
        return hook

    def prepare(self, hook: Hook, method: str, subpath: str, headers: Mapping[str, str],
                raw: bytes) -> Prepared | Reply:
        """Parse a complete body: what to store, or the 4xx answer (input quarantined)."""
        try:
            _check_codings(headers)
            body = _decode(raw, headers.get("content-type", ""), self.max_json_depth)
            note = parse_notification(method, subpath, body)
            return self._prepared(hook, note, headers, raw, method, subpath)
        except InboundError as exc:
            return self.refuse(hook, headers, raw, exc.status, exc.code, str(exc),
                               exc.expression)
        except Exception as exc:
            return self.fail(hook, headers, raw, exc)

    def incomplete(self, hook: Hook, headers: Mapping[str, str], partial: bytes,
                   problem: str) -> Reply:
        """A body that never arrived whole (`problem` in INCOMPLETE, or "too-large"): never
        acknowledged; what did arrive (at most max_body_bytes) is kept in quarantine."""
        if problem == "too-large":
            return self.refuse(hook, headers, partial[: self.max_body_bytes], 413, "too-costly",
                               f"body larger than {self.max_body_bytes} bytes (the first "
                               f"{self.max_body_bytes} bytes are kept)")
        status, code, reason = INCOMPLETE[problem]
        return self.refuse(hook, headers, partial[: self.max_body_bytes], status, code,
                           f"{reason} ({len(partial)} bytes received)", note=problem)

    def refuse(self, hook: Hook, headers: Mapping[str, str], raw: bytes, status: int, code: str,
               reason: str, expression: str | None = None, note: str = "") -> Reply:
        kept = f"{note}: " if note else ""
        inbox_id = self.inbox.reject(CHANNEL, hook.server, raw,
                                     f"hook {hook.id[:6]}: {kept}{reason}",
                                     content_type=headers.get("content-type", "")[:128],
                                     headers=_kept(headers))
        log.warning("hook: bad notification quarantined",
                    extra={"hook": hook.id[:6], "inbox_id": inbox_id, "why": code})
        outcome = build_operation_outcome("error", code, reason, expression)
        return Reply(status, json.dumps(outcome).encode())

    def fail(self, hook: Hook | None, headers: Mapping[str, str], raw: bytes,
             exc: BaseException) -> Reply:
        """The catch-all: an unexpected error is logged once with its traceback and a
        correlation id, the input is kept in quarantine, and the sender gets a 500
        OperationOutcome with the same id (it will retry; the input is not lost)."""
        correlation = uuid.uuid4().hex[:16]
        log.error("hook: request failed", exc_info=exc,
                  extra={"hook": hook.id[:6] if hook else "", "correlation_id": correlation})
        try:
            self.inbox.reject(CHANNEL, hook.server if hook else "", raw,
                              f"internal error {correlation}: {type(exc).__name__}",
                              content_type=headers.get("content-type", "")[:128],
                              headers=_kept(headers))
        except Exception:
            log.error("hook: could not quarantine the input",
                      extra={"correlation_id": correlation})
        return Reply(500, internal_error(correlation))

    def _prepared(self, hook: Hook, note: Notification, headers: Mapping[str, str], raw: bytes,
                  method: str, subpath: str) -> Prepared:
        payload = {"hook_id": hook.id, "method": method, "subpath": subpath}
        message: dict[str, Any] = {"channel": CHANNEL, "sender": hook.server, "body": raw,
                                   "content_type": headers.get("content-type", "")[:128],
                                   "headers": _kept(headers)}
        reply = Reply(200, STORED_BUNDLE if note.shape in ("backport-r4", "backport-r4b", "r5")
                      else STORED_OUTCOME)
        if note.type in (HANDSHAKE, HEARTBEAT):
            return Prepared({**message, "work_kind": None, "status": "processed"},
                            (hook.id, note.type), reply)
        kind = WORK_KIND if note.starts_work else None
        return Prepared({**message, "work_kind": kind, "work_payload": payload,
                         "dedupe_key": dedupe_key(hook.id, note, raw),
                         "status": "received" if kind else "processed"}, None, reply)

    # -- the WSGI path (Flask) --------------------------------------------------------------

    def handle(self, method: str, environ: dict[str, Any], open_stream: OpenStream,
               hook_id: str, subpath: str) -> Reply:
        """Answer one request to `/hooks/<hook_id>[/<subpath>]` read through WSGI."""
        admitted = self.admit(hook_id, environ.get("HTTP_AUTHORIZATION", ""))
        if isinstance(admitted, Reply):
            return admitted
        headers = wsgi_headers(environ)
        raw, problem = self._read_body(environ, open_stream)
        if problem:
            return self.incomplete(admitted, headers, raw, problem)
        prepared = self.prepare(admitted, method, subpath, headers, raw)
        if isinstance(prepared, Reply):
            return prepared
        try:
            self.writer.accept(prepared.message, health=prepared.health)
        except Exception as exc:
            return self.fail(admitted, headers, raw, exc)
        return prepared.reply

    def _read_body(self, environ: dict[str, Any], open_stream: OpenStream) -> tuple[bytes, str]:
        declared = get_content_length(environ)
        stream = open_stream()
        limit = self.max_body_bytes
        wanted = limit + 1 if declared is None else min(declared, limit + 1)
        chunks: list[bytes] = []
        got = 0
        try:
            while got < wanted:
                chunk = stream.read(min(65536, wanted - got))
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
        except ClientDisconnected:
            return b"".join(chunks), "truncated"
        raw = b"".join(chunks)
        if len(raw) > limit or (declared is not None and declared > limit):
            return raw[:limit], "too-large"
        if declared is not None and len(raw) < declared:
            return raw, "truncated"
        return raw, ""


def dedupe_key(hook_id: str, note: Notification, raw: bytes) -> str | None:
    """Same hook + same event (number, focus, version) -> same key; None for pings.

    An event with neither a readable number nor a version (or timestamp) cannot be told apart
    from another one of the same focus, and a notification without events from any other: the
    bytes identify those, so only a byte-for-byte redelivery counts as a duplicate."""
    if note.shape == "empty":
        return None
    if note.shape == "delete":
        return f"{CHANNEL}|{hook_id}|delete|{note.events[0].focus}"
    if note.type != EVENT:
        return None
    parts: list[list[str | None]] = []
    for event in note.events:
        carried = note.resource_for(event.focus) if event.focus else None
        version = _version(carried) if carried else None
        parts.append([event.event_number, event.focus, version or event.timestamp])
    if not parts or any(number is None and stamp is None for number, _, stamp in parts):
        parts.append(["bytes", None, hashlib.sha256(raw).hexdigest()[:32]])
    digest = hashlib.sha256(json.dumps([note.subscription, parts]).encode()).hexdigest()[:40]
    return f"{CHANNEL}|{hook_id}|{digest}"


def wsgi_headers(environ: dict[str, Any]) -> dict[str, str]:
    """The headers the endpoint reads, by lower-case name, from a WSGI environ."""
    found = {"content-type": environ.get("CONTENT_TYPE", ""),
             "content-length": environ.get("CONTENT_LENGTH", ""),
             "if-match": environ.get("HTTP_IF_MATCH", ""),
             "user-agent": environ.get("HTTP_USER_AGENT", "")}
    return {name: str(value) for name, value in found.items() if value}


def internal_error(correlation: str) -> bytes:
    return json.dumps(build_operation_outcome(
        "error", "exception", f"internal error; correlation id {correlation} (the input is "
        "kept; the server logged the cause)")).encode()


def _version(resource: dict[str, Any]) -> str | None:
    meta = resource.get("meta") or {}
    version = meta.get("versionId") if isinstance(meta, dict) else None
    return str(version)[:64] if version else None


def _bearer(header: str) -> str:
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _check_codings(headers: Mapping[str, str]) -> None:
    """Only chunked transfer coding and no content coding: an unknown transfer coding is 501
    (RFC 9112 6.1), a content coding we do not decode 415 (RFC 9110 8.4.1), not a guess."""
    def codings(name: str, allowed: str) -> list[str]:
        listed = (c.strip().lower() for c in (headers.get(name) or "").split(","))
        return [c for c in listed if c and c != allowed]

    if unknown := codings("transfer-encoding", "chunked"):
        raise InboundError(f"transfer coding {unknown[0][:32]!r} is not supported; send the "
                           "body plain or chunked", code="not-supported", status=501)
    if unknown := codings("content-encoding", "identity"):
        raise InboundError(f"content coding {unknown[0][:32]!r} is not supported; send the "
                           "JSON uncompressed", code="not-supported", status=415)


def _decode(raw: bytes, content_type: str, max_depth: int) -> Any:
    if not raw.strip():
        return None
    if "xml" in content_type.lower():
        raise InboundError("XML notifications are not accepted; subscribe with "
                           "channel.payload = application/fhir+json", code="not-supported",
                           status=415)
    body = parse_json(raw, max_depth)
    if body is None:
        raise InboundError("the body is JSON null, not a FHIR resource", code="structure")
    return body


def _kept(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: headers[key][:256] for key, name in KEPT_HEADERS.items() if headers.get(key)}


STORED_BUNDLE = json.dumps(build_transaction_response()).encode()
STORED_OUTCOME = json.dumps(build_operation_outcome("information", "informational",
                                                    "notification stored")).encode()
UNAUTHENTICATED = json.dumps(build_operation_outcome(
    "error", "login", "unknown hook or missing/wrong secret in the Authorization header; use "
    "the channel.header of the Subscription")).encode()
RATE_LIMITED = json.dumps(build_operation_outcome(
    "error", "throttled", "too many notifications for this hook; send again after the "
    "Retry-After seconds")).encode()


def hooks_blueprint(endpoint: HookEndpoint) -> Blueprint:
    blueprint = Blueprint("subscriptions_hooks", __name__)

    def answer(hook_id: str, subpath: str) -> Response:
        reply = endpoint.handle(request.method, request.environ, lambda: request.stream,
                                hook_id, subpath)
        return Response(reply.body, status=reply.status, mimetype=FHIR_JSON,
                        headers=list(reply.headers))

    @blueprint.route(ROOT_RULE, methods=METHODS, strict_slashes=False)
    def hook_root(hook_id: str) -> Response:
        return answer(hook_id, "")

    @blueprint.route(PATH_RULE, methods=METHODS)
    def hook_path(hook_id: str, subpath: str) -> Response:
        return answer(hook_id, subpath)

    return blueprint
