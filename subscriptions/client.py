"""The adapter's FHIR client: the shared one (fhir_http) under the adapter's log name, with its
backoff and the reads it uses, and the OAuth token form of SMART Backend Services."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from fhir_http.client import FhirClient as SharedFhirClient
from fhir_http.client import Params, send_plain
from fhir_http.reply import Reply


@dataclass
class FhirClient(SharedFhirClient):
    backoff: float = 0.3

    log: ClassVar[logging.Logger] = logging.getLogger("refloop.subscriptions.client")

    def get(self, path: str, params: Params | None = None,
            ok: tuple[int, ...] = (200,)) -> Reply:
        return self.send("GET", path, params=params, ok=ok)


def send_form(url: str, data: dict[str, str], *, timeout: float = 10.0, retries: int = 3,
              backoff: float = 0.3) -> Reply:
    """POST a form (an OAuth token request); bounded retry on network errors and 5xx."""
    return send_plain("POST", url, data=data, headers={"Accept": "application/json"},
                      timeout=timeout, retries=retries, backoff=backoff)
