"""SMART Backend Services for payers: client_credentials with a private_key_jwt client
assertion signed with joserfc (RS384 for an RSA key, ES384 for an EC P-384 key). Each
assertion has a fresh jti and lives at most five minutes; tokens are cached until shortly
before they expire and never logged."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from pas_client.config import ConfigError, PayerAuth

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 300   # seconds: SMART Backend Services allows at most five minutes
REFRESH_MARGIN = 30        # seconds before expiry when a cached token is no longer used
KEY_TYPES: dict[str, type[RSAKey] | type[ECKey]] = {"RS384": RSAKey, "ES384": ECKey}


def parse_signing_key(pem: bytes, alg: str = "") -> tuple[RSAKey | ECKey, str]:
    """The private key and its algorithm: `alg` when configured, else from the key's type."""
    for candidate in ([alg] if alg else list(KEY_TYPES)):
        if candidate not in KEY_TYPES:
            raise ConfigError(f"key_alg {candidate!r} is not supported; use RS384 or ES384")
        try:
            key = KEY_TYPES[candidate].import_key(pem)
        except (JoseError, ValueError, TypeError):
            continue
        if isinstance(key, ECKey) and key.curve_name != "P-384":
            raise ConfigError(f"the EC key is on {key.curve_name}; ES384 needs a P-384 key")
        if key.is_private:
            return key, candidate
    raise ConfigError("key_file must hold a PEM private key: RSA (RS384) or EC P-384 (ES384)")


class BackendServicesToken:
    """The client assertion and the access-token cache of one payer registration."""

    def __init__(self, auth: PayerAuth) -> None:
        self.auth = auth
        self._token = ""
        self._refresh_at = 0.0
        self._lock = threading.Lock()
        self._key: tuple[RSAKey | ECKey, str] | None = None

    def signing_key(self) -> tuple[RSAKey | ECKey, str]:
        if self._key is None:
            try:
                pem = Path(self.auth.key_file).read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read key_file {self.auth.key_file}: "
                                  f"{exc.strerror}") from exc
            self._key = parse_signing_key(pem, self.auth.key_alg)
        return self._key

    def build_assertion(self, now: float | None = None) -> str:
        key, alg = self.signing_key()
        issued = int(time.time() if now is None else now)
        header = {"alg": alg, "typ": "JWT", **({"kid": self.auth.key_id}
                                                if self.auth.key_id else {})}
        claims = {"iss": self.auth.client_id, "sub": self.auth.client_id,
                  "aud": self.auth.token_url, "iat": issued,
                  "exp": issued + ASSERTION_LIFETIME, "jti": uuid.uuid4().hex}
        return jwt.encode(header, claims, key, algorithms=[alg])

    def cds_hooks_jwt(self, audience: str, now: float | None = None) -> str:
        """The bearer JWT a CDS Hooks client sends on every call (CDS Hooks 2.0 "Trusting CDS
        Clients"): signed with our key, iss = our client id, aud = the exact URL called, a
        fresh jti, five minutes at most."""
        key, alg = self.signing_key()
        issued = int(time.time() if now is None else now)
        header = {"alg": alg, "typ": "JWT", **({"kid": self.auth.key_id}
                                                if self.auth.key_id else {})}
        claims = {"iss": self.auth.client_id, "aud": audience, "iat": issued,
                  "exp": issued + ASSERTION_LIFETIME, "jti": uuid.uuid4().hex}
        return jwt.encode(header, claims, key, algorithms=[alg])

    def form(self) -> dict[str, str]:
        return {"grant_type": "client_credentials", "scope": self.auth.scope,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.build_assertion()}

    def cached(self) -> str:
        with self._lock:
            return self._token if time.time() < self._refresh_at else ""

    def store(self, token: str, expires_in: float) -> None:
        """Keep the token until shortly before it expires (half its life when that is short)."""
        margin = min(REFRESH_MARGIN, expires_in / 2)
        with self._lock:
            self._token, self._refresh_at = token, time.time() + expires_in - margin

    def forget(self) -> None:
        """Drop the cached token (the payer refused it); the next request fetches a new one."""
        with self._lock:
            self._token, self._refresh_at = "", 0.0
