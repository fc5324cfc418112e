"""Unsubscribe tokens: opaque, signed (HMAC-SHA256 with the outreach secret), carrying which
patient and address the one-click link unsubscribes; nothing else is needed to honour it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from pathlib import Path


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
    body = base64.urlsafe_b64encode(json.dumps([patient, address, channel]).encode()).rstrip(b"=")
    mac = base64.urlsafe_b64encode(hmac.new(secret, body, hashlib.sha256).digest()[:18])
    return (body + b"." + mac).decode()


def read(secret: bytes, token: str) -> tuple[str, str, str] | None:
    """(patient, address, channel), or None for a forged or damaged token."""
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
