"""SMART Backend Services client assertions (pas_client/auth.py, joserfc): algorithm by key
type, kid, fresh jti, exp at most five minutes ahead, aud = token URL; the token cache."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import ECKey, RSAKey

from pas_client.auth import BackendServicesToken, parse_signing_key
from pas_client.config import ConfigError, Organization, PayerAuth, payer_from_table

TOKEN_URL = "https://payer.example/oauth/token"


def write_key(path: Path, key: PrivateKeyTypes) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def auth_for(key_file: Path, key_alg: str = "") -> PayerAuth:
    return PayerAuth(kind="backend-services", client_id="refloop", key_file=str(key_file),
                     key_id="k1", key_alg=key_alg, token_url=TOKEN_URL)


@pytest.mark.parametrize(("make", "alg", "key_cls"), [
    (lambda: rsa.generate_private_key(65537, 2048), "RS384", RSAKey),
    (lambda: ec.generate_private_key(ec.SECP384R1()), "ES384", ECKey)])
def test_assertion_is_signed_with_the_keys_algorithm(tmp_path: Path, make, alg, key_cls
                                                     ) -> None:
    private = make()
    token = BackendServicesToken(auth_for(write_key(tmp_path / "k.pem", private)))
    before = int(time.time())
    assertion = token.build_assertion()
    public = key_cls.import_key(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    decoded = jwt.decode(assertion, public, algorithms=[alg])
    assert decoded.header == {"alg": alg, "typ": "JWT", "kid": "k1"}
    claims = decoded.claims
    assert claims["iss"] == claims["sub"] == "refloop"
    assert claims["aud"] == TOKEN_URL
    assert before <= claims["iat"] and claims["exp"] - claims["iat"] <= 300
    assert claims["exp"] > time.time()


def test_every_assertion_has_a_fresh_jti(tmp_path: Path) -> None:
    key = write_key(tmp_path / "k.pem", ec.generate_private_key(ec.SECP384R1()))
    token = BackendServicesToken(auth_for(key))
    forms = [token.form() for _ in range(3)]
    jtis = {jwt.decode(f["client_assertion"], ECKey.import_key(key.read_bytes()),
                       algorithms=["ES384"]).claims["jti"] for f in forms}
    assert len(jtis) == 3
    assert forms[0]["grant_type"] == "client_credentials"
    assert forms[0]["client_assertion_type"] == \
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def test_another_key_does_not_verify(tmp_path: Path) -> None:
    key = write_key(tmp_path / "k.pem", ec.generate_private_key(ec.SECP384R1()))
    other = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assertion = BackendServicesToken(auth_for(key)).build_assertion()
    with pytest.raises(BadSignatureError):
        jwt.decode(assertion, ECKey.import_key(other), algorithms=["ES384"])


def test_unsuitable_keys_are_refused_with_what_to_use(tmp_path: Path) -> None:
    p256 = write_key(tmp_path / "p256.pem", ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ConfigError, match="P-384"):
        parse_signing_key(p256.read_bytes())
    with pytest.raises(ConfigError, match="PEM private key"):
        parse_signing_key(b"not a key")
    rsa_key = write_key(tmp_path / "rsa.pem", rsa.generate_private_key(65537, 2048))
    with pytest.raises(ConfigError, match="PEM private key"):
        parse_signing_key(rsa_key.read_bytes(), "ES384")
    missing = BackendServicesToken(auth_for(tmp_path / "absent.pem"))
    with pytest.raises(ConfigError, match="cannot read key_file"):
        missing.build_assertion()


def test_configured_alg_is_used_and_checked(tmp_path: Path) -> None:
    key = write_key(tmp_path / "rsa.pem", rsa.generate_private_key(65537, 2048))
    assert parse_signing_key(key.read_bytes(), "RS384")[1] == "RS384"
    table = {"name": "P", "base_url": "https://p.example", "auth": "backend-services",
             "client_id": "c", "key_file": str(key), "token_url": TOKEN_URL,
             "key_alg": "HS256"}
    with pytest.raises(ConfigError, match="key_alg"):
        payer_from_table(table, Organization())
    table.update(key_alg="ES384", ca_file="/etc/ca.pem")
    payer = payer_from_table(table, Organization())
    assert payer.auth.key_alg == "ES384" and payer.ca_file == "/etc/ca.pem"


def test_token_cache_until_shortly_before_expiry(tmp_path: Path) -> None:
    token = BackendServicesToken(auth_for(tmp_path / "unused.pem"))
    assert token.cached() == ""
    token.store("t-300", 300)
    assert token.cached() == "t-300"
    token.store("t-short", 20)       # short-lived: kept for half its life
    assert token.cached() == "t-short"
    token.store("t-expiring", 0)
    assert token.cached() == ""
    token.store("t-again", 300)
    token.forget()
    assert token.cached() == ""
