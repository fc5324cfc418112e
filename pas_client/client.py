"""HTTP to a payer (the one module of the adapter that uses requests): PAS $submit, $inquire,
reads, Subscription create, eligibility and CRD (CDS Hooks). Every HTTP reply comes back as a
Reply with its status, headers and raw bytes, whatever the status, so the caller stores it before
interpreting it; only a timeout or a broken connection raises PeerError (the work item retries,
resending the identical bytes)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import requests
import urllib3

from pas_client.auth import BackendServicesToken
from pas_client.config import PayerConfig
from referrals.errors import PeerError

log = logging.getLogger("refloop.pas")
FHIR_JSON = "application/fhir+json"


#: 4xx statuses that mean "not now" (timeout, rate limit), not "your request is wrong"
TRY_LATER = frozenset({408, 429})
#: response headers never kept (they can carry credentials)
SECRET_HEADERS = frozenset({"set-cookie", "authorization", "proxy-authorization"})


@dataclass(frozen=True)
class Reply:
    """One HTTP reply from a payer, as received: status, headers and the raw bytes."""

    status: int
    raw: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def rejected(self) -> bool:
        return 400 <= self.status < 500 and self.status not in TRY_LATER

    @property
    def retryable(self) -> bool:
        """A 5xx, or 408/429 (the payer asks us to come back later): the same bytes are sent
        again."""
        return self.status >= 500 or self.status in TRY_LATER

    @cached_property
    def parsed(self) -> tuple[Any, str]:
        """(the decoded JSON, "") or (None, why it is not JSON)."""
        if not self.raw.strip():
            return None, "the reply has no body"
        try:
            return json.loads(self.raw), ""
        except (ValueError, UnicodeDecodeError) as exc:
            return None, f"the reply is not JSON ({type(exc).__name__}: {str(exc)[:120]})"

    @property
    def body(self) -> dict[str, Any]:
        """The JSON object of the reply; {} when it has none."""
        value = self.parsed[0]
        return value if isinstance(value, dict) else {}

    def outcome_text(self) -> str:
        """The OperationOutcome's issues, for people."""
        return outcome_text(self.body) or f"HTTP {self.status} without an OperationOutcome"


def outcome_text(body: dict[str, Any]) -> str:
    issues = body.get("issue", []) if body.get("resourceType") == "OperationOutcome" else []
    parts = [" ".join(filter(None, [str(i.get("severity", "")), str(i.get("code", "")),
                                    str((i.get("details") or {}).get("text", "")),
                                    str(i.get("diagnostics", "")),
                                    ",".join(map(str, i.get("expression", [])))]))
             for i in issues if isinstance(i, dict)]
    return "; ".join(p for p in parts if p)


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

    def send_eligibility(self, body: bytes) -> Reply:
        return self._post("CoverageEligibilityRequest/$submit", body)

    def read(self, reference: str) -> Reply:
        """GET [base]/Type/id (an id-only notification names what to read)."""
        return self._send("GET", reference, None)

    def call(self, method: str, url: str, body: bytes | None, headers: dict[str, str]
             ) -> Reply:
        """Any other exchange with the payer (CDS Hooks), with the caller's headers."""
        return self._exchange(method, url, body, headers, url.rsplit("/", 1)[-1])

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
        return self._send("POST", path, body)

    def _send(self, method: str, path: str, body: bytes | None) -> Reply:
        reply = self._exchange(method, f"{self.payer.base_url}/{path}", body,
                               self._headers(), path)
        if reply.status == 401 and self.token is not None:
            self.token.forget()  # the caller retries with a new token
        return reply

    def _exchange(self, method: str, url: str, body: bytes | None, headers: dict[str, str],
                  path: str) -> Reply:
        """One exchange. Redirects are never followed (the request carries patient data, and
        a redirect could send it to another host): a 3xx comes back as the reply. The whole
        reply must arrive within timeout_seconds and be at most max_reply_bytes."""
        deadline = time.monotonic() + self.payer.timeout_seconds
        try:
            response = self.session.request(method, url, data=body, headers=headers,
                                            verify=self.verify, allow_redirects=False,
                                            stream=True, timeout=self.payer.timeout_seconds)
            with response:
                raw = self._read(response, path, deadline)
        except OSError as exc:  # requests' errors, and a certificate file it cannot read
            log.warning("pas exchange failed", extra={"payer": self.payer.name, "path": path,
                                                      "error": type(exc).__name__})
            raise PeerError(f"payer {self.payer.name}: {path} failed: {describe_failure(exc)}"
                            "; the identical bundle will be resent") from exc
        log.info("pas exchange", extra={"payer": self.payer.name, "path": path,
                                        "status": response.status_code})
        kept = {k: v for k, v in response.headers.items() if k.lower() not in SECRET_HEADERS}
        return Reply(response.status_code, raw, kept)

    def _read(self, response: requests.Response, path: str, deadline: float) -> bytes:
        """The reply's body, or PeerError when it is too long or too slow. Read as it comes
        (read1: one socket read each), so a payer dripping bytes cannot stretch the deadline."""
        limit, size = self.payer.max_reply_bytes, 0
        chunks: list[bytes] = []
        raw = response.raw
        while True:
            try:
                chunk = raw.read1(64 * 1024, decode_content=True)
            except urllib3.exceptions.HTTPError as exc:  # not OSError: wrapped for the caller
                raise requests.ConnectionError(str(exc)) from exc
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise PeerError(f"payer {self.payer.name}: {path} answered more than "
                                f"max_reply_bytes ({limit} bytes); the reply was not read",
                                retryable=False)
            if time.monotonic() > deadline:
                raise PeerError(f"payer {self.payer.name}: {path} did not finish its reply "
                                f"within timeout_seconds ({self.payer.timeout_seconds:g} s); "
                                "the identical bundle will be resent")
            chunks.append(chunk)


def raise_for_retry(payer: str, path: str, reply: Reply, token_used: bool) -> None:
    """A reply that means "try again with the same bytes": 5xx, or 401 to our access token."""
    if reply.retryable:
        raise PeerError(f"payer {payer}: {path} answered HTTP {reply.status}; the identical "
                        "bundle will be resent")
    if reply.status == 401 and token_used:
        raise PeerError(f"payer {payer}: {path} refused our access token (HTTP 401); a new "
                        "token is fetched and the identical bundle resent")


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
