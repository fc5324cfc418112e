"""Slot sources, one per destination, chosen by its `source` key: the EHR's FHIR server
(Schedule/Slot, or IHE $find/$hold/$book when its CapabilityStatement declares them), a SMART
Scheduling Links publisher, or an HL7 v2 scheduling system (no queryable slots)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from fhir_http.client import Authorizer
from scheduling.client import FhirClient
from scheduling.config import Destination, SchedulingConfig
from scheduling.slots import SlotSource

#: (FHIR base URL) -> the Authorization header builder for that server, or None
AuthorizerFor = Callable[[str], Authorizer | None]


class Sources:
    """The source of each destination, built on first use and kept for the process."""

    def __init__(self, config: SchedulingConfig, *, db: Any,
                 authorizer_for: AuthorizerFor | None = None) -> None:
        self.config = config
        self.db = db
        self.authorizer_for = authorizer_for
        self._built: dict[str, SlotSource] = {}
        self._clients: dict[str, FhirClient] = {}
        self._lock = threading.Lock()

    def client(self, base: str) -> FhirClient:
        with self._lock:
            if base not in self._clients:
                authorize = self.authorizer_for(base) if self.authorizer_for else None
                self._clients[base] = FhirClient(base.rstrip("/"),
                                                 timeout=self.config.http_timeout_seconds,
                                                 authorize=authorize)
            return self._clients[base]

    def for_destination(self, destination: Destination) -> SlotSource | None:
        """None for a v2 scheduling system (the patient sends preferences instead)."""
        if destination.source == "hl7v2":
            return None
        with self._lock:
            found = self._built.get(destination.name)
        if found is not None:
            return found
        built = self._build(destination)
        with self._lock:
            return self._built.setdefault(destination.name, built)

    def _build(self, destination: Destination) -> SlotSource:
        if destination.source == "smart-links":
            from scheduling.sources.published import PublishedSlotSource

            return PublishedSlotSource(destination, self.db)
        from scheduling.sources.fhir_slots import FhirSlotSource
        from scheduling.sources.ihe import IheSource, declares_ihe

        client = self.client(destination.fhir_base)
        body = client.read("metadata").body
        capability = body if isinstance(body, dict) else {}
        if destination.source == "ihe" or declares_ihe(capability):
            return IheSource(destination, client)
        return FhirSlotSource(destination, client, capability)
