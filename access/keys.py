"""Public keys: checking a JWK Set, and fetching JWK Sets from URLs (a client's `jwks_url`, an
external authorization server's `jwks_uri`) with a cache that honours Cache-Control."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from access.client import get_json
from referrals.errors import PeerError, RefloopError

PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k")
KEY_TYPES = ("RSA", "EC")
DEFAULT_TTL = 300.0
MAX_TTL = 3600.0
REFETCH_AFTER = 10.0  # seconds between fetches forced by an unknown kid
_MAX_AGE = re.compile(r"max-age=(\d+)")


class JwksError(RefloopError):
    """A JWK Set that cannot be used; the message says why."""


def check_public_jwks(data: Any) -> dict[str, Any]:
    """`data` as a JWK Set of public RSA/EC keys, each with a unique kid; else JwksError."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list) or not data["keys"]:
        raise JwksError("not a JWK Set: expected {\"keys\": [...]} with at least one key")
    kids = []
    for index, key in enumerate(data["keys"]):
        if not isinstance(key, dict) or key.get("kty") not in KEY_TYPES:
            raise JwksError(f"key #{index + 1}: kty must be RSA or EC")
        if not key.get("kid"):
            raise JwksError(f"key #{index + 1}: has no kid (SMART requires one per key)")
        if any(member in key for member in PRIVATE_MEMBERS):
            raise JwksError(f"key {key['kid']!r} holds private key material; register the "
                            "public keys only")
        kids.append(key["kid"])
    if len(set(kids)) != len(kids):
        raise JwksError("two keys share a kid; each kid must be unique in the set")
    try:
        KeySet.import_key_set(data)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError) as exc:
        raise JwksError(f"the keys cannot be read: {exc}") from exc
    return data


def check_backend_keys(data: dict[str, Any]) -> dict[str, Any]:
    """A checked JWK Set (check_public_jwks) of a Backend Services client: one of its keys
    must verify what SMART asks the client to sign with, RS384 (an RSA key) or ES384 (an EC key
    on P-384). A tenant's server may sign with others (ES256 on P-256), so only here."""
    if not any(key["kty"] == "RSA" or key.get("crv") == "P-384" for key in data["keys"]):
        raise JwksError("no key can sign as SMART Backend Services asks (RS384 with an RSA "
                        "key, ES384 with an EC key on P-384)")
    return data


@dataclass
class KeyCache:
    """JWK Sets by URL, kept for the publisher's max-age (5 minutes when it sends none, at most
    an hour); a kid not in the cached set fetches again, at most every 10 seconds."""

    timeout: float = 10.0
    _sets: dict[str, tuple[float, float, KeySet]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, url: str, kid: str | None = None) -> KeySet:
        now = time.monotonic()
        with self._lock:
            cached = self._sets.get(url)
        if cached is not None:
            expires, fetched, keys = cached
            fresh = expires > now
            known = kid is None or any(k.kid == kid for k in keys.keys)
            if fresh and (known or now - fetched < REFETCH_AFTER):
                return keys
        keys, ttl = self._fetch(url)
        with self._lock:
            self._sets[url] = (now + ttl, now, keys)
        return keys

    def _fetch(self, url: str) -> tuple[KeySet, float]:
        answer = get_json(url, timeout=self.timeout)
        if answer.status != 200:
            raise PeerError(f"JWK Set {url} answered {answer.status}")
        try:
            data = check_public_jwks(answer.body)
        except JwksError as exc:
            raise PeerError(f"JWK Set {url}: {exc}") from exc
        match = _MAX_AGE.search(answer.headers.get("Cache-Control", ""))
        ttl = min(float(match.group(1)), MAX_TTL) if match else DEFAULT_TTL
        return KeySet.import_key_set(data), ttl  # type: ignore[arg-type]
