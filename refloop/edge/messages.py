"""What the edge passes around: a request's head, an answer, and the routes' interface."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol

FHIR_JSON = "application/fhir+json"
STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode("latin-1")
                for s in HTTPStatus}


@dataclass(frozen=True)
class Head:
    """A request once its line and headers are in."""

    method: str
    path: str  # percent-decoded, UTF-8 (what routes match)
    raw_path: bytes  # as sent, without the query
    query: bytes
    headers: Mapping[str, str]  # lower-case names; repeated headers joined with ", "
    version: str
    peer: tuple[str, int]
    declared_length: int | None
    chunked: bool

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.declared_length)


@dataclass(frozen=True)
class Answer:
    """A complete HTTP answer."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str | None = FHIR_JSON
    route: str = ""  # the route pattern for the request log line


class Reply(Protocol):
    """A route's immediate answer (subscriptions.endpoint.Reply has this shape)."""

    @property
    def status(self) -> int: ...
    @property
    def body(self) -> bytes: ...
    @property
    def headers(self) -> tuple[tuple[str, str], ...]: ...


class Upload(Protocol):
    """A route that takes the body: at most `max_bytes`, then `complete` or `abandon`."""

    @property
    def max_bytes(self) -> int: ...
    @property
    def route(self) -> str: ...
    def complete(self, body: bytes) -> Reply | asyncio.Future[Any]: ...
    def abandon(self, partial: bytes, problem: str) -> Reply: ...


class Route(Protocol):
    """Serves the paths under `prefix`; `begin` returns None to leave a request to WSGI."""

    prefix: str

    def begin(self, head: Any) -> Reply | Upload | None: ...
    def pattern(self, head: Any) -> str: ...


def outcome(status: int, code: str, text: str, *, route: str = "(edge)",
            headers: tuple[tuple[str, str], ...] = ()) -> Answer:
    """An OperationOutcome answer made by the edge itself."""
    body = {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": text}]}
    return Answer(status, json.dumps(body).encode(), headers, FHIR_JSON, route)


@dataclass
class Pending:
    """A request being read."""

    head: Head | None = None
    url: bytearray = field(default_factory=bytearray)
    header_list: list[tuple[str, str]] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)
    received: int = 0
    limit: int = 0
    upload: Upload | None = None
    answer: Answer | None = None  # decided before (the rest of) the body was read
    problem: str = ""  # "too-large": declared over the limit (the first bytes are read)
    complete: bool = False
    queued: bool = False
    keep_alive: bool = True
    started: float = 0.0
    header_bytes: int = 0
    route: str = ""  # the route pattern, for the log line
