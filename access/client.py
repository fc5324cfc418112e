"""HTTP to other parties (the only module here that uses requests): fetching JWK Sets, asking
an introspection endpoint, and requesting a token as a Backend Services client would (for
`refloop clients token` and the demo)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey, import_key

from referrals.errors import PeerError

MAX_BYTES = 1 << 20
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: Any  # parsed JSON, or None when the body was not JSON


def get_json(url: str, *, timeout: float) -> Answer:
    try:
        response = requests.get(url, timeout=timeout, allow_redirects=False, stream=True,
                                headers={"Accept": "application/json"})
        raw = response.raw.read(MAX_BYTES + 1, decode_content=True)
    except requests.RequestException as exc:
        raise PeerError(f"{url} cannot be reached: {type(exc).__name__}") from exc
    if len(raw) > MAX_BYTES:
        raise PeerError(f"{url} answered with more than 1 MB")
    return Answer(response.status_code, response.headers, _parse(raw))


def post_form(url: str, data: dict[str, str], *, timeout: float,
              auth: tuple[str, str] | None = None) -> Answer:
    try:
        response = requests.post(url, data=data, auth=auth, timeout=timeout,
                                 allow_redirects=False, headers={"Accept": "application/json"})
    except requests.RequestException as exc:
        raise PeerError(f"{url} cannot be reached: {type(exc).__name__}") from exc
    return Answer(response.status_code, response.headers, _parse(response.content))


def load_private_key(path: Path, kid: str = "") -> tuple[RSAKey | ECKey, str, str]:
    """A private key from a PEM file or a JWK (JSON) file: (key, kid, alg RS384|ES384)."""
    text = path.read_bytes()
    if text.lstrip().startswith(b"{"):
        data = json.loads(text)
        key = import_key(data)
        kid = kid or str(data.get("kid", ""))
    else:
        try:
            key = RSAKey.import_key(text)
        except (ValueError, TypeError):
            key = ECKey.import_key(text)
    if not isinstance(key, RSAKey | ECKey) or not key.is_private:
        raise PeerError(f"{path} holds no RSA or EC private key")
    if isinstance(key, ECKey) and key.curve_name != "P-384":
        raise PeerError(f"{path} holds an EC key on {key.curve_name}: SMART Backend Services "
                        "signs ES384 with a P-384 key, or RS384 with an RSA key")
    if not kid:
        key.ensure_kid()
        kid = str(key.kid)
    return key, kid, "RS384" if isinstance(key, RSAKey) else "ES384"


def build_assertion(key: RSAKey | ECKey, kid: str, alg: str, *, client_id: str,
                    token_url: str) -> str:
    now = int(time.time())
    return jwt.encode({"alg": alg, "kid": kid, "typ": "JWT"},
                      {"iss": client_id, "sub": client_id, "aud": token_url, "iat": now,
                       "exp": now + 240, "jti": uuid.uuid4().hex}, key, algorithms=[alg])


def request_token(token_url: str, *, client_id: str, key_file: Path, kid: str = "",
                  scope: str, timeout: float = 10.0) -> dict[str, Any]:
    key, kid, alg = load_private_key(key_file, kid)
    answer = post_form(token_url, {
        "grant_type": "client_credentials", "scope": scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": build_assertion(key, kid, alg, client_id=client_id,
                                            token_url=token_url)}, timeout=timeout)
    if answer.status != 200 or not isinstance(answer.body, dict) or \
            "access_token" not in answer.body:
        detail = answer.body.get("error_description") or answer.body.get("error") \
            if isinstance(answer.body, dict) else ""
        raise PeerError(f"the token endpoint {token_url} refused: {answer.status} {detail}")
    return answer.body


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None
