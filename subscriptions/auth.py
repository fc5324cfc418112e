"""SMART Backend Services: `client_credentials` with a `private_key_jwt` client assertion.

A fresh assertion for every token request (unique jti, exp at most 5 minutes ahead, aud = the
token URL, kid in the header, RS384 or ES384); the access token is cached until shortly before it
expires. Our public keys are published as a JWKS. JOSE is done with joserfc, authlib's JOSE
library (authlib.jose is deprecated in favour of it); only this module touches it.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from joserfc import jwk, jwt

from referrals.errors import PeerError
from subscriptions.client import FhirClient, send_form

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
KEY_TYPES = {"RS384": "RSA", "ES384": "EC"}


def _import(pem: bytes, alg: str) -> Any:
    return jwk.import_key(pem, KEY_TYPES[alg])  # type: ignore[call-overload]

ASSERTION_LIFETIME = 240  # seconds; the spec allows at most 300
EARLY_REFRESH = 60  # renew this many seconds before the token expires


@dataclass(frozen=True)
class SigningKey:
    pem: bytes
    kid: str
    alg: str

    @classmethod
    def from_file(cls, path: str, kid: str, alg: str) -> SigningKey:
        pem = Path(path).read_bytes()
        return cls(pem, kid or _thumbprint(pem, alg), alg)

    def public_jwk(self) -> dict[str, Any]:
        key = _import(self.pem, self.alg)
        return {**key.as_dict(private=False), "kid": self.kid, "alg": self.alg, "use": "sig"}

    def sign(self, claims: dict[str, Any]) -> str:
        key = _import(self.pem, self.alg)
        header = {"alg": self.alg, "kid": self.kid, "typ": "JWT"}
        return jwt.encode(header, claims, key, algorithms=[self.alg])


def build_client_assertion(key: SigningKey, client_id: str, token_url: str,
                           now: float | None = None) -> str:
    moment = int(time.time() if now is None else now)
    return key.sign({"iss": client_id, "sub": client_id, "aud": token_url,
                     "iat": moment, "exp": moment + ASSERTION_LIFETIME,
                     "jti": uuid.uuid4().hex})


def build_jwks(keys: list[SigningKey]) -> dict[str, Any]:
    seen: dict[str, dict[str, Any]] = {}
    for key in keys:
        seen.setdefault(key.kid, key.public_jwk())
    return {"keys": list(seen.values())}


@dataclass
class BackendServicesAuth:
    """An Authorizer for FhirClient: `auth(fresh)` -> "Bearer <token>"."""

    key: SigningKey
    client_id: str
    scope: str
    token_url: str
    timeout: float = 10.0
    retries: int = 3
    _token: str = field(default="", repr=False)
    _expires: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    last_assertion: str = field(default="", repr=False)

    def __call__(self, fresh: bool) -> str:
        with self._lock:
            if fresh or not self._token or time.time() >= self._expires - EARLY_REFRESH:
                self._token, lifetime = self._request_token()
                self._expires = time.time() + lifetime
            return f"Bearer {self._token}"

    def _request_token(self) -> tuple[str, float]:
        assertion = build_client_assertion(self.key, self.client_id, self.token_url)
        self.last_assertion = assertion
        reply = send_form(self.token_url, {
            "grant_type": "client_credentials", "scope": self.scope,
            "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion,
        }, timeout=self.timeout, retries=self.retries)
        body = reply.body if isinstance(reply.body, dict) else {}
        if reply.status != 200 or not body.get("access_token"):
            raise PeerError(f"token request to {self.token_url} refused ({reply.status}): "
                            f"{body.get('error', '')} {body.get('error_description', '')}; "
                            "check client_id, key_id and that the server has our JWKS",
                            retryable=reply.status >= 500)
        return str(body["access_token"]), float(body.get("expires_in") or 300)


def discover_token_url(base: str, timeout: float = 10.0) -> str:
    """The token endpoint from `{base}/.well-known/smart-configuration`."""
    client = FhirClient(base, timeout=timeout)
    reply = client.send("GET", ".well-known/smart-configuration", ok=(200,))
    url = reply.body.get("token_endpoint") if isinstance(reply.body, dict) else None
    if not url:
        raise PeerError(f"{base}/.well-known/smart-configuration has no token_endpoint; set "
                        "token_url in the [[fhir_servers]] entry", retryable=False)
    return str(url)


def _thumbprint(pem: bytes, alg: str) -> str:
    return str(_import(pem, alg).thumbprint())
