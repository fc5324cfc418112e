"""The FHIR HTTP client every adapter uses (requests): one interaction with a timeout, a bounded
retry with backoff, one token refresh on 401, and PeerError for what the caller did not expect.
A write is sent again only when the server applied nothing (no answer, 429, 503), so a retry
never makes a second resource. Each adapter subclasses FhirClient with its own log name."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import requests

from fhir_http.reply import (
    FHIR_JSON,
    UNSTORABLE_ESCAPE,
    Reply,
    diagnostics,
    safe_url,
    without_unstorable,
)
from referrals.errors import PeerError

#: answers that may go away when asked again (rate limit, a gateway or server busy)
RETRY_STATUS = frozenset({429, 502, 503, 504})
#: of those, the ones after which the server applied nothing, so a write may be sent again
WRITE_RETRY_STATUS = frozenset({429, 503})
#: 4xx answers that mean "come back later", not "the request is wrong"
TRY_LATER = frozenset({408, 429})

Params = list[tuple[str, str]]

#: returns the Authorization header value ("" for open servers); True asks for a fresh token
Authorizer = Callable[[bool], str]


@dataclass
class FhirClient:
    base: str
    timeout: float = 10.0
    retries: int = 3
    authorize: Authorizer | None = None
    backoff: float = 0.2
    _local: threading.local = field(default_factory=threading.local, init=False, repr=False)

    log: ClassVar[logging.Logger] = logging.getLogger("refloop.fhir_http")

    @property
    def session(self) -> requests.Session:
        """This thread's HTTP session: keep-alive connections to the server, never shared
        between threads (a worker's threads and its concurrent re-reads)."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else \
            f"{self.base.rstrip('/')}/{path.lstrip('/')}"

    def send(self, method: str, path: str, *, params: Params | None = None,
             body: Any = None, headers: dict[str, str] | None = None,
             ok: tuple[int, ...] = (200, 201)) -> Reply:
        """One interaction; statuses outside `ok` raise PeerError (retryable for 5xx, 408
        and 429)."""
        url = self.url(path)
        reply = self._with_retry(method, url, params, body, headers or {})
        if reply.status not in ok:
            raise PeerError(f"{method} {safe_url(url)} answered {reply.status}: "
                            f"{diagnostics(reply.body)}",
                            retryable=reply.status >= 500 or reply.status in TRY_LATER)
        return reply

    def _with_retry(self, method: str, url: str, params: Params | None, body: Any,
                    extra: dict[str, str]) -> Reply:
        refreshed = False
        for attempt in range(1, self.retries + 1):
            response = self._attempt(method, url, params, body, extra, attempt)
            if response is None:
                self._pause(attempt)
                continue
            if response.status_code == 401 and self.authorize is not None and not refreshed:
                refreshed = True
                self.authorize(True)
                continue
            if attempt < self.retries and may_retry(method, response.status_code):
                self._pause(attempt)
                continue
            return reply_of(response)
        raise PeerError(f"{method} {safe_url(url)}: no answer after {self.retries} attempts")

    def _attempt(self, method: str, url: str, params: Params | None, body: Any,
                 extra: dict[str, str], attempt: int) -> requests.Response | None:
        """One request, logged; None when it got no answer and may be tried again."""
        started = time.perf_counter()
        try:
            response = self.session.request(method, url, params=params, json=body,
                                            timeout=self.timeout,
                                            headers={**self._headers(body is not None),
                                                     **extra})
        except requests.RequestException as exc:
            self.log.warning("fhir call failed", extra={"method": method, "url": safe_url(url),
                                                        "attempt": attempt,
                                                        "error": type(exc).__name__})
            if attempt == self.retries:
                raise PeerError(f"{method} {safe_url(url)} failed: {type(exc).__name__}; "
                                "check that the server is reachable") from exc
            return None
        self.log.info("fhir call", extra={"method": method, "url": safe_url(url),
                                          "status": response.status_code, "attempt": attempt,
                                          "ms": round((time.perf_counter() - started) * 1000, 1)})
        return response

    def _pause(self, attempt: int) -> None:
        time.sleep(self.backoff * 2 ** (attempt - 1))

    def _headers(self, has_body: bool) -> dict[str, str]:
        # no-cache: a notification is a hint to read the newest version, and HAPI otherwise
        # answers an identical search from its cache for up to a minute
        headers = {"Accept": FHIR_JSON, "Cache-Control": "no-cache"}
        if has_body:
            headers["Content-Type"] = FHIR_JSON
        if self.authorize is not None:
            token = self.authorize(False)
            if token:
                headers["Authorization"] = token
        return headers


def may_retry(method: str, status: int) -> bool:
    """Whether an answer may be asked again: a read on any RETRY_STATUS, a write only when
    the server applied nothing."""
    return status in RETRY_STATUS and (method == "GET" or status in WRITE_RETRY_STATUS)


def send_plain(method: str, url: str, *, data: dict[str, str] | None = None,
               headers: dict[str, str] | None = None, timeout: float = 10.0,
               retries: int = 3, backoff: float = 0.2, decode: bool = True,
               log: logging.Logger | None = None) -> Reply:
    """A request outside FHIR (an OAuth token form, a SMART Scheduling Links file), with a
    bounded retry on network errors and 5xx; any status comes back as the Reply. `decode`
    False leaves the body as text only (a large ndjson file is not parsed as JSON)."""
    for attempt in range(1, retries + 1):
        try:
            response = requests.request(method, url, data=data, timeout=timeout,
                                        headers=headers or {})
        except requests.RequestException as exc:
            if attempt == retries:
                raise PeerError(f"{method} {safe_url(url)} failed: {type(exc).__name__}"
                                ) from exc
            time.sleep(backoff * 2 ** (attempt - 1))
            continue
        if log is not None:
            log.info(f"http {method.lower()}", extra={"url": safe_url(url),
                                                      "status": response.status_code})
        if response.status_code >= 500 and attempt < retries:
            time.sleep(backoff * 2 ** (attempt - 1))
            continue
        return reply_of(response, decode=decode)
    raise PeerError(f"{method} {safe_url(url)}: no answer after {retries} attempts")


def reply_of(response: requests.Response, *, decode: bool = True) -> Reply:
    body = body_of(response) if decode else None
    text = response.text if not decode or not response.content.startswith(b"{") else ""
    return Reply(response.status_code, body, dict(response.headers), text)


def body_of(response: requests.Response) -> Any:
    """The answer's JSON, None when it has none; strings PostgreSQL cannot store are cleaned."""
    if not response.content:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return without_unstorable(body) if UNSTORABLE_ESCAPE.search(response.content) else body
