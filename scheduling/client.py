"""The adapter's FHIR client: the shared one (fhir_http) under the adapter's log name, with
reads (their ETag is on the Reply), searches with paging, and plain GETs of SMART Scheduling
Links files."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from fhir_http.client import FhirClient as SharedFhirClient
from fhir_http.client import Params, send_plain
from fhir_http.reply import Reply, safe_url
from referrals.errors import PeerError


@dataclass
class FhirClient(SharedFhirClient):
    log: ClassVar[logging.Logger] = logging.getLogger("refloop.scheduling.client")

    def read(self, path: str) -> Reply:
        return self.send("GET", path, ok=(200,))

    def search(self, rtype: str, params: Params) -> dict[str, Any]:
        body = self.send("GET", rtype, params=params, ok=(200,)).body
        if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
            raise PeerError(f"GET {self.url(rtype)}: the answer is not a Bundle")
        return body

    def pages(self, rtype: str, params: Params, max_pages: int = 100
              ) -> Iterator[dict[str, Any]]:
        """Each page of a search, following `next` links (bounded)."""
        bundle = self.search(rtype, params)
        for _ in range(max_pages):
            yield bundle
            following = next((link.get("url") for link in bundle.get("link") or []
                              if link.get("relation") == "next"), None)
            if not following:
                return
            bundle = self.send("GET", str(following), ok=(200,)).body


def fetch(url: str, *, timeout: float = 10.0, headers: dict[str, str] | None = None,
          retries: int = 3) -> Reply:
    """A plain GET (SMART Scheduling Links manifests and ndjson files); 304 is an answer."""
    reply = send_plain("GET", url, headers=headers, timeout=timeout, retries=retries,
                       backoff=0.2, decode=False, log=FhirClient.log)
    if reply.status not in (200, 304):
        raise PeerError(f"GET {safe_url(url)} answered {reply.status}",
                        retryable=reply.status >= 500)
    return reply
