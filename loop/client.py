"""The adapter's one HTTP client (requests, DESIGN.md rule 4): FHIR reads, searches, conditional
creates and updates against a specialist's or a referrer's FHIR server, with a timeout and a
bounded retry on every call; failures become PeerError; URLs are logged without their query."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from referrals.errors import PeerError

FHIR_JSON = "application/fhir+json"
RETRY_STATUS = frozenset({429, 502, 503, 504})

log = logging.getLogger("refloop.loop.client")

#: returns the Authorization header value ("" for open servers); True asks for a fresh token
Authorizer = Callable[[bool], str]


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class FhirClient:
    base: str
    timeout: float = 10.0
    retries: int = 3
    authorize: Authorizer | None = None
    backoff: float = 0.2
    _local: threading.local = field(default_factory=threading.local, init=False, repr=False)

    @property
    def session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else \
            f"{self.base.rstrip('/')}/{path.lstrip('/')}"

    def read(self, path: str) -> dict[str, Any]:
        body = self.send("GET", path, ok=(200,)).body
        if not isinstance(body, dict) or not body.get("resourceType"):
            raise PeerError(f"GET {_safe(self.url(path))}: the answer is not a FHIR resource")
        return body

    def try_read(self, path: str) -> dict[str, Any] | None:
        """The resource, or None when the server says 404/410."""
        reply = self.send("GET", path, ok=(200, 404, 410))
        return reply.body if reply.status == 200 and isinstance(reply.body, dict) else None

    def create_once(self, resource: dict[str, Any], identifier: str) -> dict[str, Any]:
        """A conditional create (`If-None-Exist: identifier=...`): a retry after a lost answer
        finds the resource it made instead of making a second one. Returns the stored resource
        (or at least its id)."""
        rtype = resource["resourceType"]
        reply = self.send("POST", rtype, body=resource,
                          headers={"If-None-Exist": f"identifier={identifier}",
                                   "Prefer": "return=representation"}, ok=(200, 201))
        return self._stored(rtype, reply)

    def update_where(self, resource: dict[str, Any], identifier: str) -> dict[str, Any]:
        """A conditional update (`PUT Type?identifier=...`): creates the resource the first
        time, updates it after."""
        rtype = resource["resourceType"]
        reply = self.send("PUT", rtype, params=[("identifier", identifier)], body=resource,
                          headers={"Prefer": "return=representation"}, ok=(200, 201))
        return self._stored(rtype, reply)

    def send(self, method: str, path: str, *, params: list[tuple[str, str]] | None = None,
             body: Any = None, headers: dict[str, str] | None = None,
             ok: tuple[int, ...] = (200, 201)) -> Reply:
        """One interaction; statuses outside `ok` raise PeerError (retryable for 5xx/429)."""
        url = self.url(path)
        reply = self._with_retry(method, url, params, body, headers or {})
        if reply.status not in ok:
            raise PeerError(f"{method} {_safe(url)} answered {reply.status}: "
                            f"{diagnostics(reply.body)}",
                            retryable=reply.status >= 500 or reply.status in (408, 429))
        return reply

    def _stored(self, rtype: str, reply: Reply) -> dict[str, Any]:
        if isinstance(reply.body, dict) and reply.body.get("resourceType") == rtype:
            return reply.body
        location = reply.headers.get("Location") or reply.headers.get("location") or ""
        parts = location.split("/_history")[0].rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2] == rtype:
            return {"resourceType": rtype, "id": parts[-1]}
        raise PeerError(f"{rtype}: the server answered {reply.status} without the resource "
                        "or a Location")

    def _with_retry(self, method: str, url: str, params: list[tuple[str, str]] | None,
                    body: Any, extra: dict[str, str]) -> Reply:
        refreshed = False
        for attempt in range(1, self.retries + 1):
            started = time.perf_counter()
            try:
                response = self.session.request(method, url, params=params, json=body,
                                                timeout=self.timeout,
                                                headers={**self._headers(body is not None),
                                                         **extra})
            except requests.RequestException as exc:
                log.warning("fhir call failed", extra={"method": method, "url": _safe(url),
                                                       "attempt": attempt,
                                                       "error": type(exc).__name__})
                if attempt == self.retries:
                    raise PeerError(f"{method} {_safe(url)} failed: {type(exc).__name__}; "
                                    "check that the server is reachable") from exc
                time.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            log.info("fhir call", extra={"method": method, "url": _safe(url),
                                         "status": response.status_code, "attempt": attempt,
                                         "ms": round((time.perf_counter() - started) * 1000, 1)})
            if response.status_code == 401 and self.authorize is not None and not refreshed:
                refreshed = True
                self.authorize(True)
                continue
            # a write is retried only when nothing was applied (429/503)
            if response.status_code in RETRY_STATUS and attempt < self.retries and \
                    (method == "GET" or response.status_code in (429, 503)):
                time.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            return Reply(response.status_code, _json(response), dict(response.headers))
        raise PeerError(f"{method} {_safe(url)}: no answer after {self.retries} attempts")

    def _headers(self, has_body: bool) -> dict[str, str]:
        headers = {"Accept": FHIR_JSON, "Cache-Control": "no-cache"}
        if has_body:
            headers["Content-Type"] = FHIR_JSON
        if self.authorize is not None:
            token = self.authorize(False)
            if token:
                headers["Authorization"] = token
        return headers


def _json(response: requests.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def diagnostics(body: Any) -> str:
    if isinstance(body, dict):
        texts = [str(i.get("diagnostics") or i.get("code") or "")
                 for i in body.get("issue") or [] if isinstance(i, dict)]
        if texts:
            return "; ".join(texts)[:500]
    return "(no OperationOutcome)"


def _safe(url: str) -> str:
    return url.split("?", 1)[0]
