"""The payer sandbox's token endpoint (A FAKE PAYER, for tests and the demo): SMART Backend
Services client_credentials with a private_key_jwt client assertion, verified against a
configured JWKS the way a strict payer does, and bearer tokens it then requires on $submit and
$inquire when asked to."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ["RS384", "ES384"]
MAX_LIFETIME = 300  # seconds an assertion may live (exp - now), as SMART requires
SKEW = 60           # seconds of clock skew tolerated


@dataclass(frozen=True)
class SandboxAuth:
    """The client registration the sandbox knows: its public keys and client id."""
    client_id: str
    jwks: dict[str, Any]
    require_bearer: bool = False   # $submit/$inquire/Subscription need a token it issued
    token_lifetime: int = 300      # expires_in of the access tokens it issues


class TokenRefused(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass
class TokenIssuer:
    auth: SandboxAuth
    issued: dict[str, float] = field(default_factory=dict)   # access token -> expiry
    assertions: list[dict[str, Any]] = field(default_factory=list)  # accepted: header+claims
    seen_jti: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def issue(self, form: dict[str, str], token_url: str) -> dict[str, Any]:
        """Verify the token request; the token response, or raise TokenRefused."""
        if form.get("grant_type") != "client_credentials":
            raise TokenRefused(400, "unsupported_grant_type", "use client_credentials")
        if form.get("client_assertion_type") != ASSERTION_TYPE or \
                not form.get("client_assertion"):
            raise TokenRefused(400, "invalid_request",
                               "a jwt-bearer client_assertion is required")
        header, claims = self.verify(form["client_assertion"], token_url)
        token = secrets.token_urlsafe(24)
        with self.lock:
            self.issued[token] = time.time() + self.auth.token_lifetime
            self.assertions.append({"header": header, "claims": claims})
        return {"access_token": token, "token_type": "bearer",
                "expires_in": self.auth.token_lifetime, "scope": form.get("scope", "")}

    def verify(self, assertion: str, token_url: str) -> tuple[dict[str, Any], dict[str, Any]]:
        keys = KeySet.import_key_set(self.auth.jwks)  # type: ignore[arg-type]
        try:
            token = jwt.decode(assertion, keys, algorithms=ALGORITHMS)
        except (JoseError, ValueError) as exc:
            raise TokenRefused(401, "invalid_client", "the client assertion does not verify "
                               f"with a registered key ({type(exc).__name__})") from exc
        claims, now = dict(token.claims), time.time()
        if not token.header.get("kid"):
            raise TokenRefused(401, "invalid_client", "the assertion header has no kid")
        if claims.get("iss") != self.auth.client_id or claims.get("sub") != self.auth.client_id:
            raise TokenRefused(401, "invalid_client", "iss and sub must be the client_id")
        if claims.get("aud") != token_url:
            raise TokenRefused(401, "invalid_client", f"aud must be {token_url}")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp < now - SKEW or \
                exp > now + MAX_LIFETIME + SKEW:
            raise TokenRefused(401, "invalid_client", "exp missing, past or more than five "
                               "minutes ahead")
        jti = claims.get("jti")
        with self.lock:
            if not jti or jti in self.seen_jti:
                raise TokenRefused(401, "invalid_client", "jti missing or already used")
            self.seen_jti.add(str(jti))
        return dict(token.header), claims

    def accepts(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        with self.lock:
            expiry = self.issued.get(token.strip())
        return scheme.lower() == "bearer" and expiry is not None and expiry > time.time()
