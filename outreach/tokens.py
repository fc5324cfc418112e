"""Unsubscribe tokens: opaque and authenticated (AES-256-GCM under a key derived from the
outreach secret), carrying which patient and address the one-click link unsubscribes; nothing
else is needed to honour it, and nothing in the URL tells who the patient is.

Links mailed before tokens were encrypted (`<base64 JSON>.<HMAC>`, readable) are still honoured.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_KEY_LABEL = b"refloop outreach unsubscribe token"
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")


def load_secret(path: Path) -> bytes:
    """The secret in `path`, created (random, mode 600) on first use."""
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(secret)
    return secret


def make(secret: bytes, patient: str, address: str, channel: str = "email") -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(_key(secret)).encrypt(nonce, json.dumps([patient, address, channel])
                                          .encode(), None)
    return base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()


def read(secret: bytes, token: str) -> tuple[str, str, str] | None:
    """(patient, address, channel), or None for a forged or damaged token."""
    if "." in token:
        return _read_signed(secret, token)
    raw = _exact_bytes(token)
    if raw is None:
        return None
    try:
        plain = AESGCM(_key(secret)).decrypt(raw[:12], raw[12:], None)
        patient, address, channel = json.loads(plain)
    except (InvalidTag, ValueError, TypeError):
        return None
    return str(patient), str(address), str(channel)


def _exact_bytes(token: str) -> bytes | None:
    """The bytes `token` encodes, or None unless it is exactly the unpadded base64url that
    `make` writes: no character outside the alphabet, none too many, none too few."""
    if not _ALPHABET.fullmatch(token):
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except ValueError:
        return None
    return raw if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == token else None


def _key(secret: bytes) -> bytes:
    return hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()


def _read_signed(secret: bytes, token: str) -> tuple[str, str, str] | None:
    """A token of the earlier, signed-only shape (links already in patients' mailboxes)."""
    body, _, mac = token.encode().partition(b".")
    expected = base64.urlsafe_b64encode(hmac.new(secret, body, hashlib.sha256).digest()[:18])
    if not mac or not hmac.compare_digest(mac, expected):
        return None
    try:
        padded = body + b"=" * (-len(body) % 4)
        patient, address, channel = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, TypeError):
        return None
    return str(patient), str(address), str(channel)
