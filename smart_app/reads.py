"""A referral's resources, read from the server the referral came from, never from another one.

Each reference on a referral (its Patient, ServiceRequest, Coverage, requester) is relative to
the server the referral came from: `Patient/p1` there may be another person than `Patient/p1` at
the EHR that launched the app. So a resource is taken from

1. the copy stored with the referral, under that server (what detection and reconciliation keep
   current), else
2. a live read from that server: with the launch's access token when that server is the one that
   launched the app (the token is only good there), otherwise through Refloop's own client for it
   (SMART Backend Services where that server is configured so; `SmartRuntime.read_remote`,
   connected by refloop/wiring).

What cannot be read is said, with the reason, instead of showing a bare reference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from referrals.errors import PeerError
from smart_app.config import normalise_iss

log = logging.getLogger("refloop.smart.reads")

#: `read_remote(server, reference)`: the resource, None when the server says it does not exist;
#: raises PeerError when it cannot be asked
RemoteRead = Callable[[str, str], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Read:
    reference: str
    resource: dict[str, Any] | None
    #: why it could not be read ("" when it was)
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.resource is not None


class OriginReader:
    """Reads references relative to one server (`origin`, a referral's ResourceStore server)."""

    def __init__(self, resources: Any, origin: str, *, iss: str = "",
                 launch_read: Callable[[str], dict[str, Any]] | None = None,
                 remote: RemoteRead | None = None) -> None:
        self.resources = resources
        self.origin = origin
        self.iss = iss
        self.launch_read = launch_read
        self.remote = remote
        self._seen: dict[str, Read] = {}

    @property
    def is_fhir_server(self) -> bool:
        return self.origin.startswith(("http://", "https://"))

    @property
    def is_launch_server(self) -> bool:
        return bool(self.iss) and normalise_iss(self.origin) == normalise_iss(self.iss)

    def read(self, reference: str) -> Read:
        if reference not in self._seen:
            self._seen[reference] = self._read(reference)
        return self._seen[reference]

    def _read(self, reference: str) -> Read:
        parts = reference.split("/")
        if len(parts) != 2 or not all(parts):
            return Read(reference, None, "it is not a reference to a resource on that server")
        stored = self.resources.try_get(parts[0], parts[1], server=self.origin)
        if stored is not None:
            return Read(reference, stored)
        if not self.is_fhir_server:
            return Read(reference, None, f"it did not come with the referral from "
                        f"{_origin_words(self.origin)}")
        try:
            found = self._live(reference)
        except PeerError as exc:
            log.warning("resource not readable", extra={"resource_type": parts[0],
                                                        "server": self.origin,
                                                        "error": str(exc)[:200]})
            return Read(reference, None, f"{self.origin} did not answer it ({exc})")
        if found is None:
            return Read(reference, None, f"{self.origin} has no such resource")
        return Read(reference, found)

    def _live(self, reference: str) -> dict[str, Any] | None:
        if self.is_launch_server and self.launch_read is not None:
            return self.launch_read(reference)
        if self.remote is None:
            raise PeerError("Refloop has no client for that server")
        return self.remote(self.origin, reference)


def _origin_words(origin: str) -> str:
    if origin.startswith("hl7:"):
        return f"the HL7 v2 sender {origin[4:]}"
    if origin == "demo":
        return "the demo loader"
    return origin
