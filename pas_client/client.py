"""HTTP to a payer's PAS endpoint (the one module that uses requests): $submit, $inquire and
Subscription create. POST application/fhir+json; a 4xx returns its OperationOutcome and is not
retried; a 5xx, a timeout or a broken connection raises PeerError so the work item retries,
resending the identical bytes."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import requests

from pas_client.auth import BackendServicesToken
from pas_client.config import PayerConfig
from referrals.errors import PeerError

log = logging.getLogger("refloop.pas")
FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]

    @property
    def rejected(self) -> bool:
        return 400 <= self.status < 500

    def outcome_text(self) -> str:
        """The OperationOutcome's issues, for people."""
        issues = self.body.get("issue", []) if self.body.get("resourceType") == \
            "OperationOutcome" else []
        parts = [" ".join(filter(None, [i.get("severity", ""), i.get("code", ""),
                                        (i.get("details") or {}).get("text", ""),
                                        i.get("diagnostics", ""),
                                        ",".join(i.get("expression", []))])) for i in issues]
        return "; ".join(parts) or f"HTTP {self.status} without an OperationOutcome"


class PayerClient:
    def __init__(self, payer: PayerConfig, session: requests.Session | None = None) -> None:
        self.payer = payer
        self.session = session or requests.Session()
        if payer.auth.kind == "mtls":
            self.session.cert = (payer.auth.cert_file, payer.auth.cert_key_file)
        self.token = BackendServicesToken(payer.auth) \
            if payer.auth.kind == "backend-services" else None

    def send_submit(self, body: bytes) -> Reply:
        return self._post("Claim/$submit", body)

    def send_inquire(self, body: bytes) -> Reply:
        return self._post("Claim/$inquire", body)

    def send_subscription(self, subscription: dict[str, Any]) -> Reply:
        return self._post("Subscription", json.dumps(subscription).encode())

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self._access_token()}"
        return headers

    def _access_token(self) -> str:
        assert self.token is not None
        cached = self.token.cached()
        if cached:
            return cached
        try:
            response = self.session.post(self.payer.auth.token_url, data=self.token.form(),
                                         timeout=self.payer.timeout_seconds)
        except requests.RequestException as exc:
            raise PeerError(f"payer {self.payer.name}: token endpoint unreachable: "
                            f"{type(exc).__name__}") from exc
        if response.status_code != 200:
            raise PeerError(f"payer {self.payer.name}: token request refused (HTTP "
                            f"{response.status_code}); check client_id and the registered key",
                            retryable=response.status_code >= 500)
        data = response.json()
        self.token.store(data["access_token"], float(data.get("expires_in", 300)))
        return str(data["access_token"])

    def _post(self, path: str, body: bytes) -> Reply:
        url = f"{self.payer.base_url}/{path}"
        try:
            response = self.session.post(url, data=body, headers=self._headers(),
                                         timeout=self.payer.timeout_seconds)
        except requests.RequestException as exc:
            log.warning("pas exchange failed", extra={"payer": self.payer.name, "path": path,
                                                      "error": type(exc).__name__})
            raise PeerError(f"payer {self.payer.name}: {path} failed: "
                            f"{type(exc).__name__}; the identical bundle will be resent") from exc
        log.info("pas exchange", extra={"payer": self.payer.name, "path": path,
                                        "status": response.status_code})
        if response.status_code >= 500:
            raise PeerError(f"payer {self.payer.name}: {path} answered HTTP "
                            f"{response.status_code}; the identical bundle will be resent")
        try:
            parsed = response.json() if response.content else {}
        except ValueError:
            parsed = {}
        return Reply(response.status_code, parsed if isinstance(parsed, dict) else {})
