"""The one HTTP client of the adapter (requests): FHIR reads, searches and writes with a timeout
and a bounded retry on every call; peer failures become PeerError (DESIGN.md rule 4)."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from referrals.errors import PeerError

FHIR_JSON = "application/fhir+json"
RETRY_STATUS = frozenset({429, 502, 503, 504})

log = logging.getLogger("refloop.subscriptions.client")

#: returns the Authorization header value, or "" for open servers; `fresh` forces a new token
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
    backoff: float = 0.3
    _local: threading.local = field(default_factory=threading.local, init=False, repr=False)

    @property
    def session(self) -> requests.Session:
        """This thread's HTTP session: keep-alive connections to the server, never shared
        between threads (the worker's threads and its concurrent re-reads)."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else \
            f"{self.base.rstrip('/')}/{path.lstrip('/')}"

    def get(self, path: str, params: list[tuple[str, str]] | None = None,
            ok: tuple[int, ...] = (200,)) -> Reply:
        return self.send("GET", path, params=params, ok=ok)

    def send(self, method: str, path: str, *, params: list[tuple[str, str]] | None = None,
             body: Any = None, ok: tuple[int, ...] = (200, 201)) -> Reply:
        """One FHIR interaction; statuses outside `ok` raise PeerError."""
        url = self.url(path)
        reply = self._with_retry(method, url, params, body)
        if reply.status not in ok:
            raise PeerError(f"{method} {_safe(url)} answered {reply.status}: "
                            f"{_diagnostics(reply.body)}",
                            retryable=reply.status >= 500 or reply.status == 429)
        return reply

    def _with_retry(self, method: str, url: str, params: list[tuple[str, str]] | None,
                    body: Any) -> Reply:
        refreshed = False
        for attempt in range(1, self.retries + 1):
            started = time.perf_counter()
            try:
                response = self.session.request(
                    method, url, params=params, json=body, timeout=self.timeout,
                    headers=self._headers(fresh=False, body=body is not None))
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
            if response.status_code in RETRY_STATUS and attempt < self.retries:
                time.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            return Reply(response.status_code, _json(response), dict(response.headers))
        raise PeerError(f"{method} {_safe(url)}: no answer after {self.retries} attempts")

    def _headers(self, *, fresh: bool, body: bool) -> dict[str, str]:
        # no-cache: a notification is a hint to read the newest version, and HAPI otherwise
        # answers an identical search from its cache for up to a minute
        headers = {"Accept": FHIR_JSON, "Cache-Control": "no-cache"}
        if body:
            headers["Content-Type"] = FHIR_JSON
        if self.authorize is not None:
            token = self.authorize(fresh)
            if token:
                headers["Authorization"] = token
        return headers


def send_form(url: str, data: dict[str, str], *, timeout: float = 10.0, retries: int = 3,
              backoff: float = 0.3) -> Reply:
    """POST a form (an OAuth token request); bounded retry on network errors and 5xx."""
    for attempt in range(1, retries + 1):
        try:
            response = requests.post(url, data=data, timeout=timeout,
                                     headers={"Accept": "application/json"})
        except requests.RequestException as exc:
            if attempt == retries:
                raise PeerError(f"POST {_safe(url)} failed: {type(exc).__name__}") from exc
            time.sleep(backoff * 2 ** (attempt - 1))
            continue
        if response.status_code >= 500 and attempt < retries:
            time.sleep(backoff * 2 ** (attempt - 1))
            continue
        return Reply(response.status_code, _json(response), dict(response.headers))
    raise PeerError(f"POST {_safe(url)}: no answer after {retries} attempts")


def _json(response: requests.Response) -> Any:
    if not response.content:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return without_unstorable(body) if _UNSTORABLE_ESCAPE.search(response.content) else body


#: how U+0000 and surrogates look in JSON text (a fast test before walking the value)
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_UNPAIRED = re.compile(r"[\ud800-\udfff]")


def without_unstorable(value: Any) -> Any:
    """`value` with U+0000 left out of every string and unpaired surrogates replaced by
    U+FFFD. FHIR strings may hold neither, and PostgreSQL can store neither in JSON (SQLite
    would keep them): an EHR resource that carries one still opens its referral, the same on
    both databases."""
    if isinstance(value, str):
        text = value.replace("\x00", "")
        return _UNPAIRED.sub("\ufffd", text)
    if isinstance(value, list):
        return [without_unstorable(item) for item in value]
    if isinstance(value, dict):
        return {without_unstorable(k): without_unstorable(v) for k, v in value.items()}
    return value


def _diagnostics(body: Any) -> str:
    if isinstance(body, dict):
        issues = body.get("issue") or []
        texts = [str(i.get("diagnostics") or i.get("code") or "") for i in issues
                 if isinstance(i, dict)]
        if texts:
            return "; ".join(texts)[:500]
        if body.get("error"):
            return f"{body.get('error')}: {body.get('error_description', '')}"[:500]
    return "(no OperationOutcome)"


def _safe(url: str) -> str:
    """The URL without its query string (search parameters may carry patient data)."""
    return url.split("?", 1)[0]
