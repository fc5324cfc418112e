"""SMART Backend Services for payers: client_credentials with a private_key_jwt assertion
(authlib). Tokens are cached until shortly before they expire and never logged."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

from authlib.jose import jwt

from pas_client.config import PayerAuth


class BackendServicesToken:
    def __init__(self, auth: PayerAuth) -> None:
        self.auth = auth
        self._token = ""
        self._expires = 0.0
        self._lock = threading.Lock()

    def build_assertion(self) -> str:
        now = int(time.time())
        header = {"alg": "RS384", "typ": "JWT", **({"kid": self.auth.key_id}
                                                   if self.auth.key_id else {})}
        claims = {"iss": self.auth.client_id, "sub": self.auth.client_id,
                  "aud": self.auth.token_url, "exp": now + 300, "jti": uuid.uuid4().hex}
        key = Path(self.auth.key_file).read_bytes()
        return jwt.encode(header, claims, key).decode()

    def form(self) -> dict[str, str]:
        return {"grant_type": "client_credentials", "scope": self.auth.scope,
                "client_assertion_type":
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": self.build_assertion()}

    def cached(self) -> str:
        with self._lock:
            return self._token if time.time() < self._expires - 30 else ""

    def store(self, token: str, expires_in: float) -> None:
        with self._lock:
            self._token, self._expires = token, time.time() + expires_in
