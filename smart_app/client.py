"""HTTP to the EHR (requests lives here): discovery documents, JWKS, FHIR reads with a bearer.

Every call has a timeout and follows no redirect; errors become PeerError without the URL's
query string or any token.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import requests

from referrals.errors import PeerError

log = logging.getLogger("refloop.smart.http")


class EhrHttp:
    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.session = requests.Session()

    def get_json(self, url: str, *, bearer: str | None = None,
                 accept: str = "application/json") -> dict[str, Any]:
        headers = {"Accept": accept}
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        where = _where(url)
        try:
            response = self.session.get(url, headers=headers, timeout=self.timeout,
                                        allow_redirects=False)
        except requests.RequestException as exc:
            log.warning("ehr request failed", extra={"target": where, "error": type(exc).__name__})
            raise PeerError(f"cannot reach {where}: {type(exc).__name__}") from exc
        log.info("ehr request", extra={"target": where, "status": response.status_code})
        if response.status_code != 200:
            raise PeerError(f"{where} answered HTTP {response.status_code}",
                            retryable=response.status_code >= 500)
        try:
            body = response.json()
        except ValueError as exc:
            raise PeerError(f"{where} did not answer JSON") from exc
        if not isinstance(body, dict):
            raise PeerError(f"{where} answered JSON that is not an object")
        return body

    def try_get_json(self, url: str, **kwargs: Any) -> dict[str, Any] | None:
        try:
            return self.get_json(url, **kwargs)
        except PeerError:
            return None


def _where(url: str) -> str:
    """Scheme, host and path only: FHIR query strings can carry identifiers."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
