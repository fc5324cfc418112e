"""OAuth 2.0 for the SMART app, done with authlib (the only module that imports it).

Authorization request (PKCE S256 always, state, nonce, aud = iss, launch), the code exchange and
refresh as a confidential client (private_key_jwt with a fresh assertion per request where the
server supports it, else client_secret_basic), and id_token validation against the server's JWKS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey

from referrals.errors import PeerError, RefloopError
from smart_app.config import Tenant
from smart_app.discovery import ServerMeta

#: above this many characters a GET authorize URL is risky; use POST when the server allows it
MAX_GET_URL = 2000
ASSERTION_LIFETIME = 240  # seconds; SMART requires <= 300
ID_TOKEN_LEEWAY = 60


class LaunchError(RefloopError):
    """The launch cannot go on; the message is safe to show the user (no tokens, no PHI)."""


@dataclass(frozen=True)
class AuthorizeRequest:
    method: str  # GET | POST
    url: str
    form: dict[str, str]


def new_code_verifier() -> str:
    return generate_token(64)


def build_authorize_request(meta: ServerMeta, tenant: Tenant, *, iss: str, launch: str | None,
                            scope: str, state: str, nonce: str, code_verifier: str,
                            redirect_uri: str) -> AuthorizeRequest:
    """The authorization request; GET, or POST for long scope strings when the server allows."""
    session = OAuth2Session(tenant.client_id, scope=scope, redirect_uri=redirect_uri,
                            code_challenge_method="S256")
    extra: dict[str, str] = {"aud": iss}
    if launch:
        extra["launch"] = launch
    if "openid" in scope.split():
        extra["nonce"] = nonce
    url, _ = session.create_authorization_url(meta.authorization_endpoint, state=state,
                                              code_verifier=code_verifier, **extra)
    if len(url) <= MAX_GET_URL or not meta.supports_post:
        return AuthorizeRequest("GET", url, {})
    form = {"response_type": "code", "client_id": tenant.client_id, "redirect_uri": redirect_uri,
            "scope": scope, "state": state, "code_challenge": create_s256_code_challenge(
                code_verifier), "code_challenge_method": "S256", **extra}
    return AuthorizeRequest("POST", meta.authorization_endpoint, form)


def exchange_code(meta: ServerMeta, tenant: Tenant, *, code: str, code_verifier: str,
                  redirect_uri: str, timeout: float) -> dict[str, Any]:
    session = _client(meta, tenant, redirect_uri)
    try:
        token = session.fetch_token(meta.token_endpoint, grant_type="authorization_code",
                                    code=code, code_verifier=code_verifier,
                                    redirect_uri=redirect_uri, timeout=timeout,
                                    allow_redirects=False)
    except Exception as exc:  # authlib raises OAuthError, requests its own
        raise PeerError(f"the EHR refused the code exchange: {_describe(exc)}",
                        retryable=False) from exc
    return dict(token)


def refresh(meta: ServerMeta, tenant: Tenant, *, refresh_token: str,
            timeout: float) -> dict[str, Any]:
    """New tokens; the caller keeps the old refresh token when none comes back."""
    session = _client(meta, tenant, None)
    try:
        token = session.refresh_token(meta.token_endpoint, refresh_token=refresh_token,
                                      timeout=timeout, allow_redirects=False)
    except Exception as exc:
        raise PeerError(f"the EHR refused the token refresh: {_describe(exc)}",
                        retryable=False) from exc
    return dict(token)


def validate_id_token(id_token: str, *, jwks: dict[str, Any], issuer: str, client_id: str,
                      nonce: str, now: float | None = None) -> dict[str, Any]:
    """Signature by the server's JWKS, iss, aud, exp/iat with small skew, nonce; the claims."""
    try:
        keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
        token = jwt.decode(id_token, keys, algorithms=["RS256", "RS384", "ES256", "ES384"])
    except (JoseError, ValueError, TypeError) as exc:
        raise LaunchError("the EHR's id_token signature does not verify against its JWKS") \
            from exc
    claims = dict(token.claims)
    registry = jwt.JWTClaimsRegistry(
        now=int(now) if now is not None else None, leeway=ID_TOKEN_LEEWAY,
        iss={"essential": True, "value": issuer}, aud={"essential": True, "value": client_id},
        exp={"essential": True}, iat={"essential": True},
    )
    try:
        registry.validate(claims)
    except JoseError as exc:
        raise LaunchError(f"the EHR's id_token is not valid for this app: "
                          f"{exc.error}: {exc.description or ''}".strip()) from exc
    if claims.get("nonce") != nonce:
        raise LaunchError("the EHR's id_token does not carry this launch's nonce")
    return claims


def public_jwks(tenants: tuple[Tenant, ...]) -> dict[str, Any]:
    """Our public keys for private_key_jwt (the JWKS URL registered with the EHR)."""
    keys = []
    seen = set()
    for tenant in tenants:
        if tenant.private_key_file is None or tenant.kid in seen:
            continue
        seen.add(tenant.kid)
        key = _private_key(tenant)
        public = key.as_dict(private=False)
        public.update({"kid": tenant.kid, "alg": tenant.signing_alg, "use": "sig"})
        keys.append(public)
    return {"keys": keys}


def _client(meta: ServerMeta, tenant: Tenant, redirect_uri: str | None) -> OAuth2Session:
    if tenant.private_key_file is not None and meta.supports_private_key_jwt():
        now = int(time.time())
        method = PrivateKeyJWT(meta.token_endpoint, alg=tenant.signing_alg,
                               headers={"kid": tenant.kid},
                               claims={"iat": now, "exp": now + ASSERTION_LIFETIME,
                                       "jti": generate_token(32)})
        session = OAuth2Session(tenant.client_id, _private_key(tenant),
                                token_endpoint_auth_method=method, redirect_uri=redirect_uri)
    elif tenant.client_secret:
        session = OAuth2Session(tenant.client_id, tenant.client_secret,
                                token_endpoint_auth_method="client_secret_basic",
                                redirect_uri=redirect_uri)
    else:
        raise LaunchError(f"tenant {tenant.name}: the EHR does not accept private_key_jwt and no "
                          "client_secret is configured; set client_secret in [[smart.tenants]]")
    session.max_redirects = 0
    return session


def _private_key(tenant: Tenant) -> RSAKey:
    assert tenant.private_key_file is not None
    try:
        return RSAKey.import_key(tenant.private_key_file.read_bytes())
    except (OSError, ValueError) as exc:
        raise LaunchError(f"tenant {tenant.name}: cannot read private_key_file "
                          f"{tenant.private_key_file}: {type(exc).__name__}") from exc


def _describe(exc: Exception) -> str:
    """The EHR's OAuth error code and its error_description (cut to 300 characters), else
    the kind of failure (a timeout, a refused connection)."""
    error = getattr(exc, "error", None)
    if error:
        description = " ".join(str(getattr(exc, "description", "") or "").split())[:300]
        return f"{error} ({description})" if description else str(error)
    return type(exc).__name__
