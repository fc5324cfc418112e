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
        # per request: a session's verify loses to REQUESTS_CA_BUNDLE in requests
        self.verify: str | bool = payer.ca_file or True
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
                                         headers={"Accept": "application/json"},
                                         verify=self.verify, timeout=self.payer.timeout_seconds)
        except OSError as exc:  # requests' errors, and a certificate file it cannot read
            raise PeerError(f"payer {self.payer.name}: token endpoint "
                            f"{self.payer.auth.token_url} unreachable: "
                            f"{describe_failure(exc)}") from exc
        log.info("pas token", extra={"payer": self.payer.name, "status": response.status_code})
        if response.status_code != 200:
            raise PeerError(self._token_refusal(response),
                            retryable=response.status_code >= 500)
        try:
            data = response.json()
            token, expires_in = str(data["access_token"]), float(data.get("expires_in", 300))
        except (ValueError, KeyError, TypeError) as exc:
            raise PeerError(f"payer {self.payer.name}: the token endpoint answered without an "
                            "access_token; check token_url") from exc
        self.token.store(token, expires_in)
        return token

    def _token_refusal(self, response: requests.Response) -> str:
        """Why the token endpoint refused, and what to do (its OAuth error; never a token)."""
        try:
            data = response.json()
        except ValueError:
            data = {}
        error = data.get("error", "") if isinstance(data, dict) else ""
        detail = data.get("error_description", "") if isinstance(data, dict) else ""
        auth = self.payer.auth
        said = ": ".join(filter(None, [str(error), str(detail)]))
        return (f"payer {self.payer.name}: token request refused (HTTP {response.status_code}"
                f"{', ' + said if said else ''}); register our public key (key_id "
                f"{auth.key_id or '(none)'}) for client_id {auth.client_id} at the payer, or "
                "fix client_id, key_file, key_id and token_url in its [[payers]] entry")

    def _post(self, path: str, body: bytes) -> Reply:
        url = f"{self.payer.base_url}/{path}"
        try:
            response = self.session.post(url, data=body, headers=self._headers(),
                                         verify=self.verify,
                                         timeout=self.payer.timeout_seconds)
        except OSError as exc:  # requests' errors, and a certificate file it cannot read
            log.warning("pas exchange failed", extra={"payer": self.payer.name, "path": path,
                                                      "error": type(exc).__name__})
            raise PeerError(f"payer {self.payer.name}: {path} failed: {describe_failure(exc)}"
                            "; the identical bundle will be resent") from exc
        log.info("pas exchange", extra={"payer": self.payer.name, "path": path,
                                        "status": response.status_code})
        if response.status_code >= 500:
            raise PeerError(f"payer {self.payer.name}: {path} answered HTTP "
                            f"{response.status_code}; the identical bundle will be resent")
        if response.status_code == 401 and self.token is not None:
            self.token.forget()
            raise PeerError(f"payer {self.payer.name}: {path} refused our access token (HTTP "
                            "401); a new token is fetched and the identical bundle resent")
        try:
            parsed = response.json() if response.content else {}
        except ValueError:
            parsed = {}
        return Reply(response.status_code, parsed if isinstance(parsed, dict) else {})


def describe_failure(exc: OSError) -> str:
    """A connection failure for people; TLS failures say which certificate to check."""
    if not isinstance(exc, requests.RequestException):
        return f"{exc}; check cert_file and cert_key_file"
    if isinstance(exc, requests.exceptions.SSLError) or "SSL" in str(exc) \
            or "certificate" in str(exc).lower():
        return ("TLS handshake failed: check that ca_file trusts the payer's certificate and, "
                "when the payer requires mutual TLS, that auth = \"mtls\" with cert_file and "
                "cert_key_file names the client certificate registered with the payer "
                f"({type(exc).__name__})")
    return type(exc).__name__
