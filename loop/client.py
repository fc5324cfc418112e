"""The adapter's FHIR client: the shared one (fhir_http) under the adapter's log name, with the
reads, conditional creates and updates the loop sends to specialists' and referrers' servers."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from fhir_http.client import FhirClient as SharedFhirClient
from fhir_http.reply import Reply, safe_url
from referrals.errors import PeerError


@dataclass
class FhirClient(SharedFhirClient):
    log: ClassVar[logging.Logger] = logging.getLogger("refloop.loop.client")

    def read(self, path: str) -> dict[str, Any]:
        body = self.send("GET", path, ok=(200,)).body
        if not isinstance(body, dict) or not body.get("resourceType"):
            raise PeerError(f"GET {safe_url(self.url(path))}: the answer is not a FHIR resource")
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
        return stored(rtype, reply)

    def update_where(self, resource: dict[str, Any], identifier: str) -> dict[str, Any]:
        """A conditional update (`PUT Type?identifier=...`): creates the resource the first
        time, updates it after."""
        rtype = resource["resourceType"]
        reply = self.send("PUT", rtype, params=[("identifier", identifier)], body=resource,
                          headers={"Prefer": "return=representation"}, ok=(200, 201))
        return stored(rtype, reply)


def stored(rtype: str, reply: Reply) -> dict[str, Any]:
    """The resource a write answered with, or its id from the Location header."""
    if isinstance(reply.body, dict) and reply.body.get("resourceType") == rtype:
        return reply.body
    location = reply.headers.get("Location") or reply.headers.get("location") or ""
    parts = location.split("/_history")[0].rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == rtype:
        return {"resourceType": rtype, "id": parts[-1]}
    raise PeerError(f"{rtype}: the server answered {reply.status} without the resource "
                    "or a Location")
