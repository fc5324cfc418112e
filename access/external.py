"""Tokens issued by a tenant's own authorization server: JWT access tokens checked against the
issuer's JWK Set, or opaque tokens asked about at its RFC 7662 introspection endpoint."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError

from access.client import post_form
from access.config import AccessConfig, Tenant
from access.grant import Grant, InvalidToken
from access.keys import KeyCache
from referrals.errors import PeerError

#: asymmetric algorithms only: an HMAC "signature" made with a public key proves nothing
ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"]
LEEWAY = 60
CACHE_SECONDS = 30.0  # an introspection answer is reused this long (never past the token's exp)
CACHE_SIZE = 10_000


@dataclass
class ExternalTokens:
    config: AccessConfig
    keys: KeyCache
    fhir_base: str
    _cache: dict[str, tuple[float, Grant | str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, token: str) -> Grant | None:
        """The grant for a token some tenant's server issued; None when no configured server
        could have issued it. Raises InvalidToken when one did but the token is not good."""
        claims = _unverified_claims(token)
        if claims is not None:
            tenant = self.config.tenant_for_issuer(str(claims.get("iss", "")))
            if tenant is not None and tenant.jwks_uri:
                return self._verify_jwt(token, tenant)
        tenant = self.config.introspecting
        if tenant is None:
            return None
        return self._introspect(token, tenant)

    # -- JWT access tokens --------------------------------------------------------------------
    def _verify_jwt(self, token: str, tenant: Tenant) -> Grant:
        kid = _unverified_kid(token)
        try:
            keys = self.keys.get(tenant.jwks_uri, kid)
        except PeerError as exc:
            raise InvalidToken("the issuer's keys cannot be fetched; try again later") from exc
        try:
            decoded = jwt.decode(token, keys, algorithms=ALGORITHMS)
        except (JoseError, ValueError) as exc:
            raise InvalidToken("the token's signature does not verify with the issuer's "
                               "keys") from exc
        claims = dict(decoded.claims)
        audience = tenant.audience_for(self.fhir_base)
        registry = jwt.JWTClaimsRegistry(
            leeway=LEEWAY, iss={"essential": True, "value": tenant.issuer},
            exp={"essential": True}, aud={"essential": True, "value": audience})
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise InvalidToken(_claim_problem(exc, audience)) from exc
        return _grant(claims, tenant)

    # -- introspection (RFC 7662) -------------------------------------------------------------
    def _introspect(self, token: str, tenant: Tenant) -> Grant:
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            if isinstance(cached[1], str):
                raise InvalidToken(cached[1])
            return cached[1]
        try:
            answer = self._ask(token, tenant)
            grant: Grant | str = self._accept(answer, tenant)
        except InvalidToken as exc:
            grant = str(exc)
        until = now + CACHE_SECONDS
        if not isinstance(grant, str):
            exp = answer.get("exp")
            if isinstance(exp, int | float):
                until = min(until, now + max(0.0, exp - time.time()))
        with self._lock:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = (until, grant)
        if isinstance(grant, str):
            raise InvalidToken(grant)
        return grant

    def _ask(self, token: str, tenant: Tenant) -> dict[str, Any]:
        auth = (tenant.introspection_client_id, tenant.introspection_client_secret) \
            if tenant.introspection_client_id else None
        try:
            answer = post_form(tenant.introspection_url, {"token": token}, auth=auth,
                               timeout=self.config.http_timeout_seconds)
        except PeerError as exc:
            raise InvalidToken("the token cannot be checked now (introspection failed); try "
                               "again later") from exc
        if answer.status != 200 or not isinstance(answer.body, dict):
            raise InvalidToken("the token cannot be checked now (introspection answered "
                               f"{answer.status}); try again later")
        return answer.body

    def _accept(self, answer: dict[str, Any], tenant: Tenant) -> Grant:
        if answer.get("active") is not True:
            raise InvalidToken("the token is not active (expired, revoked or unknown)")
        exp = answer.get("exp")
        if isinstance(exp, int | float) and exp < time.time() - LEEWAY:
            raise InvalidToken("the token has expired")
        if answer.get("iss") and answer["iss"] != tenant.issuer:
            raise InvalidToken("the token was issued by another server")
        audience = tenant.audience_for(self.fhir_base)
        aud = answer.get("aud")
        if aud and audience not in (aud if isinstance(aud, list) else [aud]):
            raise InvalidToken(f"the token is not meant for {audience} (aud)")
        return _grant(answer, tenant)


def _grant(claims: dict[str, Any], tenant: Tenant) -> Grant:
    scope = claims.get("scope", claims.get("scp", ""))
    scopes = scope.split() if isinstance(scope, str) else [str(s) for s in scope or []]
    patient = claims.get("patient")
    return Grant(
        client_id=str(claims.get("client_id") or claims.get("azp") or claims.get("sub") or ""),
        scopes=tuple(scopes), issuer=tenant.issuer, tenant=tenant.name, sources=tenant.sources,
        patient=_patient_reference(patient) if isinstance(patient, str) and patient else None,
        user=str(claims.get("fhirUser") or claims.get("sub") or ""))


def _patient_reference(patient: str) -> str:
    return patient if patient.startswith("Patient/") else f"Patient/{patient.rsplit('/', 1)[-1]}"


def _unverified_claims(token: str) -> dict[str, Any] | None:
    if token.count(".") != 2:
        return None
    try:
        claims = json.loads(jws.extract_compact(token.encode()).payload)
    except (JoseError, ValueError, TypeError):
        return None
    return claims if isinstance(claims, dict) else None


def _unverified_kid(token: str) -> str | None:
    try:
        kid = jws.extract_compact(token.encode()).headers().get("kid")
    except (JoseError, ValueError, TypeError):
        return None
    return str(kid) if kid else None


def _claim_problem(exc: JoseError, audience: str) -> str:
    text = f"{type(exc).__name__}: {exc.description or ''}".lower()
    if "expired" in text:
        return "the token has expired"
    if "aud" in text:
        return f"the token is not meant for {audience} (aud)"
    return f"the token's claims are not accepted ({exc.description or type(exc).__name__})"
