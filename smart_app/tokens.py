"""Encryption at rest for tokens and launch secrets (Fernet), and the random values we hand out."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from referrals.errors import RefloopError


class TokenVault:
    """Encrypts JSON blobs with a key kept in a file (created with mode 0600 when missing)."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_file(cls, path: Path) -> TokenVault:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process created it first
            else:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(Fernet.generate_key())
        for _ in range(50):  # the creator may still be writing it
            key = path.read_bytes().strip()
            if key:
                return cls(key)
            time.sleep(0.01)
        raise RefloopError(f"the SMART token key file {path} is empty; delete it to create a "
                           "new one (users must then relaunch)")

    def seal(self, value: dict[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(value).encode()).decode()

    def open(self, sealed: str) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self._fernet.decrypt(sealed.encode()))
        except InvalidToken as exc:
            raise RefloopError("stored SMART tokens cannot be decrypted: the token key file "
                               "changed; users must relaunch the app from the EHR") from exc
        return data


def new_secret() -> str:
    """256 random bits, URL-safe (session ids, state, CSRF tokens)."""
    return secrets.token_urlsafe(32)


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return secrets.compare_digest(a.encode(), b.encode())
