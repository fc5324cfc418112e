"""One client connection of the edge: HTTP/1.1 parsing (llhttp through httptools), the request
deadline, body limits, and the answers, in request order.

A request is read completely before anything acts on it, except the decision a route makes on
the headers (a hook's secret and rate limit). Whatever goes wrong while a request is being read
is answered here, with an OperationOutcome, and never reaches the application as a partial
request: bad framing (400), a body cut short by the client (400), the deadline (408), a body over
the limit (413), oversized headers (431). A route that has taken the body (an authenticated hook)
is told, so it can keep what arrived in quarantine. A body over the limit, or cut by the deadline
once its headers were in, that no route took goes to the application with its first 64 KiB and
the mark `OVERSIZED` or `TIMED_OUT` (refloop/oversized.py), so the answer is the path's own (an
OperationOutcome, the area's page) and the area that knows the sender (an upload link) keeps
that part.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

import httptools

from refloop.edge.head_rules import refusal as refuse_head
from refloop.edge.head_rules import unknown_codings
from refloop.edge.limits import EdgeLimits
from refloop.edge.messages import (
    STATUS_LINES,
    Answer,
    Head,
    Pending,
    Reply,
    Route,
    Upload,
    outcome,
)
from refloop.edge.wsgi import OVERSIZED, TIMED_OUT, WSGIApp, build_environ, run_wsgi

log = logging.getLogger("refloop.http")

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: a well-formed request line (RFC 9112 3): a method token, a target, a version
_REQUEST_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [^\x00-\x20\x7f]+ "
                           rb"HTTP/[0-9]\.[0-9]\r?\n")
#: requests read ahead of their answers (pipelining) before the connection stops reading
MAX_QUEUED = 8
#: of a body over the limit that no route took, what the application is handed (to keep)
KEPT = 64 * 1024
#: what an incomplete request is answered with when no route took its body
INCOMPLETE = {
    "truncated": (400, "incomplete", "the request ended (connection closed) before its body "
                  "was complete; nothing was done, send it again"),
    "framing": (400, "structure", "bad HTTP framing; nothing was done"),
    "deadline": (408, "timeout", "the request was not complete within the server's request "
                 "deadline; nothing was done, send it again"),
    "too-large": (413, "too-costly", "the body is larger than the server accepts"),
}


class Host(Protocol):
    """What a connection needs from the server that accepted it (refloop/edge/server.py)."""

    loop: asyncio.AbstractEventLoop
    limits: EdgeLimits
    executor: ThreadPoolExecutor
    wsgi: WSGIApp
    address: tuple[str, int]
    extra_headers: tuple[tuple[str, str], ...]

    def admit(self, connection: EdgeConnection) -> Answer | None: ...

    def release(self, connection: EdgeConnection) -> None: ...

    def route_for(self, path: str) -> Route | None: ...

    def keep(self, head: Head | None, body: bytes, reason: str) -> None: ...

    def date(self) -> bytes: ...


class EdgeConnection(asyncio.Protocol):
    def __init__(self, server: Host) -> None:
        self.server = server
        self.loop = server.loop
        self.limits = server.limits
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.current: Pending | None = None  # the request being read
        self.queue: deque[Pending] = deque()  # read (or answered early), not yet answered
        self.busy = False  # a request is being answered
        self.closing = False  # no more input is read: close once the queue is answered
        self.linger = False  # input after an early answer is discarded until we close
        self.eof = False
        self.paused = False
        self.advancing = False
        self.timer: asyncio.TimerHandle | None = None  # request deadline or idle timeout

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport  # uvloop's transports are not asyncio.Transport subclasses
        peer = transport.get_extra_info("peername") or ("", 0)
        self.peer = (str(peer[0]), int(peer[1]))
        refusal = self.server.admit(self)
        if refusal is not None:  # answered, then drained briefly (see _close), uncounted
            transport.write(self._encode(refusal, keep_alive=False, head=None))
            self.closing = self.linger = True
            self._close()
            return
        self._idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.release(self)
        self._cancel_timer()
        pending = self.current
        self.current = None
        self.transport = None
        if pending is not None and pending.upload is not None and not pending.queued:
            self._quietly_abandon(pending, "truncated")  # kept; nobody left to answer

    def data_received(self, data: bytes) -> None:
        if self.closing or self.linger:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if not self.closing:  # refused at its headers (head_rules); answered once
                self._early(self.current or Pending(), outcome(
                    400, "not-supported", "protocol upgrades are not supported"))
        except httptools.HttpParserInvalidMethodError as exc:  # a garbled line, or a method
            self._framing(exc, unknown_method=_REQUEST_LINE.match(data) is not None)
        except httptools.HttpParserError as exc:
            self._framing(exc)
        if len(self.queue) >= MAX_QUEUED:  # a client sending ahead (pipelining) waits
            self._pause()
        pending = self.current
        if pending is not None and pending.head is None and not self.closing:
            pending.header_bytes += len(data)
            if pending.header_bytes > self.limits.max_header_bytes:
                self._early(pending, outcome(431, "too-costly", "the request line and headers "
                                             f"exceed {self.limits.max_header_bytes} bytes"))
        self._advance()

    def eof_received(self) -> bool:
        self.eof = True
        pending = self.current
        if pending is not None and not self.closing and not self.linger:
            if self._oversized(pending):
                self._hand_over(pending)
            else:
                self._early(pending, self._incomplete(pending, "truncated"))
        self._advance()
        return self.transport is not None and (self.busy or bool(self.queue))

    # -- parser callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.closing:
            return
        self.current = Pending(started=time.perf_counter())
        self._cancel_timer()
        self.timer = self.loop.call_later(self.limits.request_seconds, self._deadline,
                                          self.current)

    def on_url(self, url: bytes) -> None:
        if self.current is not None:
            self.current.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.current is not None:
            self.current.header_list.append((name.decode("latin-1").lower(),
                                             value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        pending = self.current
        if pending is None or self.closing:
            return
        size = len(pending.url) + sum(len(n) + len(v) + 4 for n, v in pending.header_list)
        if size > self.limits.max_header_bytes:
            self._early(pending, outcome(431, "too-costly", "the request line and headers "
                                         f"exceed {self.limits.max_header_bytes} bytes"))
            return
        refusal = refuse_head(self.parser.get_method().decode("latin-1"),
                              self.parser.get_http_version(), pending.header_list,
                              self.parser.should_upgrade())
        if refusal is not None:
            self._early(pending, refusal)
            return
        head = self._head(pending)
        if head is None:
            self._early(pending, outcome(400, "structure", "the request target is not a "
                                         "valid URL"))
            return
        pending.head = head
        pending.keep_alive = self.parser.should_keep_alive()
        decision = self._route(pending, head)
        if decision is not None:
            if head.has_body:
                self._early(pending, decision)
            else:
                pending.answer = decision
            return
        if head.declared_length is not None and head.declared_length > pending.limit and \
                pending.upload is None:
            pending.problem, pending.limit = "too-large", KEPT  # read the first part only
        if head.has_body and head.headers.get("expect", "").lower() == "100-continue" and \
                self.transport is not None:
            self.transport.write(CONTINUE)

    def on_body(self, chunk: bytes) -> None:
        pending = self.current
        if pending is None or pending.answer is not None or self.closing:
            return
        room = pending.limit - pending.received
        if len(chunk) > room:
            if room > 0:
                pending.body.append(chunk[:room])
                pending.received += room
            if pending.upload is None:
                pending.problem = "too-large"
                self._hand_over(pending)
            else:
                self._early(pending, self._incomplete(pending, "too-large"))
            return
        pending.body.append(chunk)
        pending.received += len(chunk)

    def on_message_complete(self) -> None:
        pending = self.current
        if pending is None or self.closing:
            return
        self._cancel_timer()
        self.current = None
        pending.complete = True
        if not pending.queued:
            pending.queued = True
            self.queue.append(pending)
        if not pending.keep_alive:  # RFC 9112 9.6: what follows is neither read nor answered
            self.closing = True
            self.linger = not self.eof

    # -- reading a request -----------------------------------------------------------------

    def _head(self, pending: Pending) -> Head | None:
        try:
            url = httptools.parse_url(bytes(pending.url))
        except httptools.HttpParserInvalidURLError:
            return None
        headers: dict[str, str] = {}
        for name, value in pending.header_list:
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        raw_path = url.path or b"/"
        length = headers.get("content-length")
        return Head(
            method=self.parser.get_method().decode("latin-1"),
            path=unquote_to_bytes(raw_path).decode("utf-8", "replace"),
            raw_path=raw_path, query=url.query or b"", headers=headers,
            version=self.parser.get_http_version(), peer=self.peer,
            declared_length=int(length) if length and length.isdigit() else None,
            chunked="chunked" in headers.get("transfer-encoding", "").lower())

    def _route(self, pending: Pending, head: Head) -> Answer | None:
        """Ask the route serving the path; sets the body limit. An Answer: decided now."""
        route = self.server.route_for(head.path)
        pending.limit = self.limits.max_body_bytes
        if head.version not in ("1.0", "1.1"):  # HTTP/2 and 3 never come as this text
            return outcome(505, "not-supported", f"HTTP/{head.version[:8]} is not served; "
                           "send HTTP/1.1")
        if route is None:
            return unknown_codings(head.headers)
        try:
            decision = route.begin(head)
        except Exception as exc:
            return self._crash(pending, exc, b"")
        if decision is None:
            return None
        if hasattr(decision, "complete"):
            upload: Upload = decision  # type: ignore[assignment]
            pending.upload = upload
            pending.limit = upload.max_bytes
            pending.route = upload.route
            if head.declared_length is not None and head.declared_length > pending.limit:
                pending.problem = "too-large"  # read the first max_bytes, then refuse
            return None
        return _from_reply(decision, route.pattern(head))

    def _incomplete(self, pending: Pending, problem: str) -> Answer:
        if pending.upload is not None:
            try:
                reply = pending.upload.abandon(b"".join(pending.body), problem)
            except Exception as exc:
                return self._crash(pending, exc, b"".join(pending.body))
            return _from_reply(reply, pending.route)
        if pending.head is None and problem == "truncated":
            return outcome(400, "structure", "the connection closed before the request "
                           "headers were complete")
        status, code, text = INCOMPLETE[problem]
        if problem == "too-large":
            text = f"the body is larger than {self.limits.max_body_bytes} bytes"
        return outcome(status, code, text)

    def _deadline(self, pending: Pending) -> None:
        if pending is not self.current or self.closing:
            return
        if self._oversized(pending):
            self._hand_over(pending)
        elif pending.head is not None and pending.upload is None and pending.answer is None:
            pending.problem = "deadline"  # the app answers in the path's format (see above)
            self._hand_over(pending)
        else:
            self._early(pending, self._incomplete(pending, "deadline"))
        self._advance()

    def _framing(self, exc: Exception, *, unknown_method: bool = False) -> None:
        if self.closing:  # input after the last request we read (`Connection: close`)
            return
        pending = self.current or Pending()
        if unknown_method:  # a well-formed request line with a method llhttp does not know
            answer = outcome(501, "not-supported", "the method is not implemented here (methods "
                             "are case-sensitive: GET, HEAD, POST, PUT, DELETE, OPTIONS)")
        elif pending.upload is not None:
            answer = self._incomplete(pending, "framing")
        else:
            answer = outcome(400, "structure", f"bad HTTP request: {str(exc)[:200]}")
        self._early(pending, answer)

    @staticmethod
    def _oversized(pending: Pending) -> bool:
        return pending.problem == "too-large" and pending.upload is None

    def _hand_over(self, pending: Pending) -> None:
        """A body over the limit that no route took: stop reading it and pass the request, with
        its first KEPT bytes, to the application (see the module's text), then close."""
        pending.body = [b"".join(pending.body)[:KEPT]]
        self._early(pending, None)

    def _early(self, pending: Pending, answer: Answer | None) -> None:
        """Answer `pending` before (the rest of) its body is read, then close: what the client
        still sends is discarded. No answer: the application answers what was read."""
        self._cancel_timer()
        pending.answer = answer
        pending.keep_alive = False
        if not pending.queued:
            pending.queued = True
            self.queue.append(pending)
        if self.current is pending:
            self.current = None
        self.closing = True
        self.linger = not self.eof

    # -- answering, in order ---------------------------------------------------------------

    def _advance(self) -> None:
        if self.advancing:  # called back from an answer sent inside the loop below
            return
        self.advancing = True
        try:
            while not self.busy and self.queue and self.transport is not None:
                self.busy = True
                self._run(self.queue.popleft())
        finally:
            self.advancing = False
        if self.busy or self.queue or self.transport is None:
            return
        if self.closing or self.eof:
            self._close()
        elif self.current is None:
            self._idle()

    def _run(self, pending: Pending) -> None:
        if pending.answer is not None:
            self._send(pending, pending.answer)
            return
        body = b"".join(pending.body)
        if pending.upload is not None:
            if pending.problem:
                self._send(pending, self._incomplete(pending, pending.problem))
                return
            try:
                result = pending.upload.complete(body)
            except Exception as exc:
                self._send(pending, self._crash(pending, exc, body))
                return
            if isinstance(result, asyncio.Future):
                result.add_done_callback(lambda done: self._stored(pending, done, body))
                return
            self._send(pending, _from_reply(result, pending.route))
            return
        assert pending.head is not None
        environ = build_environ(pending.head, body, self.server.address)
        if pending.problem == "too-large":
            environ[OVERSIZED] = self.limits.max_body_bytes
        elif pending.problem == "deadline":
            environ[TIMED_OUT] = self.limits.request_seconds
        future = self.loop.run_in_executor(self.server.executor, run_wsgi, self.server.wsgi,
                                           environ)
        future.add_done_callback(lambda done: self._answered(pending, done, body))

    def _stored(self, pending: Pending, done: asyncio.Future[Any], body: bytes) -> None:
        error = done.exception()
        answer = self._crash(pending, error, body) if error is not None else \
            _from_reply(done.result(), pending.route)
        self._send(pending, answer)

    def _answered(self, pending: Pending, done: asyncio.Future[Answer], body: bytes) -> None:
        error = done.exception()
        self._send(pending, self._crash(pending, error, body) if error is not None
                   else done.result())

    def _send(self, pending: Pending, answer: Answer) -> None:
        self.busy = False
        # the answers to requests read before the end say close on the last one only
        keep_alive = pending.keep_alive and (bool(self.queue) or not (self.closing or self.eof))
        if answer.route or answer.content_type is not None:
            _log(pending, answer)  # before the answer leaves: a client may act on it at once
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self._encode(answer, keep_alive, pending.head))
        if not keep_alive and not self.closing:
            self.closing = True
        if len(self.queue) < MAX_QUEUED:
            self._resume()
        self._advance()

    def _encode(self, answer: Answer, keep_alive: bool, head: Head | None) -> bytes:
        status = STATUS_LINES.get(answer.status) or \
            f"HTTP/1.1 {answer.status} Unknown\r\n".encode("latin-1")
        lines = [status]
        if answer.content_type is not None:
            lines.append(b"Content-Type: " + answer.content_type.encode("latin-1") + b"\r\n")
            present = {name.lower() for name, _ in answer.headers}
            extra = [h for h in self.server.extra_headers if h[0].lower() not in present]
        else:
            extra = []
        for name, value in (*answer.headers, *extra):
            lines.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))
        if head is None or head.method != "HEAD" or answer.body:
            lines.append(b"Content-Length: %d\r\n" % len(answer.body))
        # else the application's, or none (RFC 9110 8.6: never a length GET would not send)
        lines.append(b"Date: %s\r\n" % self.server.date())
        if not keep_alive:
            lines.append(b"Connection: close\r\n")
        elif head is not None and head.version == "1.0":  # else it expects a close (9112 9.3)
            lines.append(b"Connection: keep-alive\r\n")
        lines.append(b"\r\n")
        if head is None or head.method != "HEAD":
            lines.append(answer.body)
        return b"".join(lines)

    # -- failures, timers, closing ---------------------------------------------------------

    def _crash(self, pending: Pending, exc: BaseException, body: bytes) -> Answer:
        """The catch-all: log once with the traceback and a correlation id, keep the input,
        answer 500 OperationOutcome with the same id."""
        correlation = uuid.uuid4().hex[:16]
        head = pending.head
        log.error("http: request failed", exc_info=exc, extra={
            "correlation_id": correlation, "method": head.method if head else "",
            "path": pending.route or "(edge)"})
        self.server.keep(head, body, f"internal error {correlation}: {type(exc).__name__}")
        return outcome(500, "exception", f"internal error; correlation id {correlation} (the "
                       "input is kept; the server logged the cause)", route=pending.route)

    def _quietly_abandon(self, pending: Pending, problem: str) -> None:
        assert pending.upload is not None
        try:
            pending.upload.abandon(b"".join(pending.body), problem)
        except Exception as exc:
            self._crash(pending, exc, b"".join(pending.body))

    def _idle(self) -> None:
        self._cancel_timer()
        self.timer = self.loop.call_later(self.limits.keepalive_seconds, self._idle_expired)

    def _idle_expired(self) -> None:
        if self.current is None and not self.busy and not self.queue:
            self._close()

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _pause(self) -> None:
        if self.transport is not None and not self.paused and not self.linger:
            self.paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self.transport is not None and self.paused:
            self.paused = False
            self.transport.resume_reading()

    def _close(self) -> None:
        """Close once the answers are written. After an early answer the client may still be
        sending: stop writing, drain its input for a moment, then close (closing a socket with
        unread input would reset the connection and could destroy the answer in flight)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._cancel_timer()
        if self.linger and not self.eof and transport.can_write_eof():
            transport.write_eof()
            self.timer = self.loop.call_later(self.limits.linger_seconds, transport.close)
            return
        transport.close()


def _from_reply(reply: Reply, route: str) -> Answer:
    return Answer(reply.status, reply.body, tuple(reply.headers), "application/fhir+json",
                  route)


def _log(pending: Pending, answer: Answer) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    head = pending.head
    log.info("http", extra={"method": head.method if head else "", "path": answer.route or
                            "(edge)", "status": answer.status,
                            "ms": round((time.perf_counter() - pending.started) * 1000, 2)})
