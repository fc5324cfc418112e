"""The adapter's one HTTP client (requests, DESIGN.md rule 4): FHIR reads with their ETag,
searches with paging, writes with If-Match, transactions and operations, and plain GETs of
SMART Scheduling Links files. Timeouts and a bounded retry on every call; failures become
PeerError; URLs are logged without their query (search parameters may carry patient data)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import requests

from referrals.errors import PeerError

FHIR_JSON = "application/fhir+json"
RETRY_STATUS = frozenset({429, 502, 503, 504})

log = logging.getLogger("refloop.scheduling.client")

#: returns the Authorization header value ("" for open servers); True asks for a fresh token
Authorizer = Callable[[bool], str]


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]
    text: str = ""

    @property
    def etag(self) -> str:
        return self.headers.get("ETag") or self.headers.get("etag") or ""

    @property
    def version(self) -> str:
        """The resource version from the ETag (W/"3" -> 3) or from meta.versionId."""
        tag = self.etag.removeprefix("W/").strip('"')
        if tag:
            return tag
        if isinstance(self.body, dict):
            return str((self.body.get("meta") or {}).get("versionId") or "")
        return ""


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

    def read(self, path: str) -> Reply:
        return self.send("GET", path, ok=(200,))

    def search(self, rtype: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        body = self.send("GET", rtype, params=params, ok=(200,)).body
        if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
            raise PeerError(f"GET {self.url(rtype)}: the answer is not a Bundle")
        return body

    def pages(self, rtype: str, params: list[tuple[str, str]],
              max_pages: int = 100) -> Iterator[dict[str, Any]]:
        """Each page of a search, following `next` links (bounded)."""
        bundle = self.search(rtype, params)
        for _ in range(max_pages):
            yield bundle
            following = next((link.get("url") for link in bundle.get("link") or []
                              if link.get("relation") == "next"), None)
            if not following:
                return
            bundle = self.send("GET", str(following), ok=(200,)).body

    def send(self, method: str, path: str, *, params: list[tuple[str, str]] | None = None,
             body: Any = None, headers: dict[str, str] | None = None,
             ok: tuple[int, ...] = (200, 201)) -> Reply:
        """One interaction; statuses outside `ok` raise PeerError (retryable for 5xx/429)."""
        url = self.url(path)
        reply = self._with_retry(method, url, params, body, headers or {})
        if reply.status not in ok:
            raise PeerError(f"{method} {_safe(url)} answered {reply.status}: "
                            f"{diagnostics(reply.body)}",
                            retryable=reply.status >= 500 or reply.status == 429)
        return reply

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
            # a write is retried only when nothing was applied (no answer or 429/503)
            if response.status_code in RETRY_STATUS and attempt < self.retries and \
                    (method == "GET" or response.status_code in (429, 503)):
                time.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            return Reply(response.status_code, _json(response), dict(response.headers),
                         response.text if not response.content.startswith(b"{") else "")
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


def fetch(url: str, *, timeout: float = 10.0, headers: dict[str, str] | None = None,
          retries: int = 3) -> Reply:
    """A plain GET (SMART Scheduling Links manifests and ndjson files); 304 is an answer."""
    for attempt in range(1, retries + 1):
        try:
            response = requests.get(url, timeout=timeout, headers=headers or {})
        except requests.RequestException as exc:
            if attempt == retries:
                raise PeerError(f"GET {_safe(url)} failed: {type(exc).__name__}") from exc
            time.sleep(0.2 * 2 ** (attempt - 1))
            continue
        log.info("http get", extra={"url": _safe(url), "status": response.status_code})
        if response.status_code >= 500 and attempt < retries:
            time.sleep(0.2 * 2 ** (attempt - 1))
            continue
        if response.status_code not in (200, 304):
            raise PeerError(f"GET {_safe(url)} answered {response.status_code}",
                            retryable=response.status_code >= 500)
        return Reply(response.status_code, None, dict(response.headers), response.text)
    raise PeerError(f"GET {_safe(url)}: no answer after {retries} attempts")


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
