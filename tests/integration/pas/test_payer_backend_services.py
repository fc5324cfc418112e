"""SMART Backend Services against the payer: client_credentials with a private_key_jwt
assertion, the token cached, a new jti for every new token, a wrong key refused with what to do,
$submit carrying the bearer token.

The payer is the PAYER SANDBOX (pas_client/sandbox), a fake, because a payer's token endpoint
and PAS endpoint cannot run here: its token endpoint verifies our assertion against the JWKS
it is configured with (signature, kid, iss/sub, aud = its token URL, exp at most five minutes,
jti never reused) and, with require_bearer, refuses $submit/$inquire without a token it issued."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc.jwk import ECKey, RSAKey

from pas_client.client import PayerClient, raise_for_retry
from pas_client.config import Organization, payer_from_table
from pas_client.sandbox import SandboxAuth, SandboxRules, SandboxServer
from referrals.errors import PeerError
from referrals.model import Stage
from refloop.services import build_services

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pas_referrals import PAYER, open_accepted, pas_settings, submit

INQUIRY = json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
    {"resource": {"resourceType": "Claim", "patient": {"reference": "Patient/p1"}}}]}).encode()
KEYS: dict[str, Callable[[], Any]] = {
    "RS384": lambda: rsa.generate_private_key(65537, 2048),
    "ES384": lambda: ec.generate_private_key(ec.SECP384R1())}


def write_key(path: Path, alg: str) -> tuple[Path, dict[str, Any]]:
    """A private key file and its public JWK (kid k1), as we would register it."""
    private = KEYS[alg]()
    path.write_bytes(private.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    jwk = (RSAKey if alg == "RS384" else ECKey).import_key(public_pem).as_dict(private=False)
    return path, {**jwk, "kid": "k1", "alg": alg, "use": "sig"}


@pytest.fixture(params=["RS384", "ES384"])
def registered(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    return write_key(tmp_path / f"{request.param}.pem", request.param)


@pytest.fixture
def payer_sandbox(registered: tuple[Path, dict[str, Any]]) -> Iterator[SandboxServer]:
    auth = SandboxAuth(client_id="refloop", jwks={"keys": [registered[1]]},
                       require_bearer=True)
    server = SandboxServer(SandboxRules(default="approve"), auth=auth).start()
    yield server
    server.stop()


def payer_table(sandbox: SandboxServer, key_file: Path) -> dict[str, Any]:
    return {"base_url": sandbox.url, "auth": "backend-services", "client_id": "refloop",
            "key_file": str(key_file), "key_id": "k1", "token_url": sandbox.token_url}


def client_for(sandbox: SandboxServer, key_file: Path) -> PayerClient:
    return PayerClient(payer_from_table({"name": PAYER, **payer_table(sandbox, key_file)},
                                        Organization()))


def test_submit_carries_the_bearer_token_and_the_token_is_cached(
        database_url: str, tmp_path: Path, registered: tuple[Path, dict[str, Any]],
        payer_sandbox: SandboxServer) -> None:
    unauthenticated = requests.post(f"{payer_sandbox.url}/Claim/$submit", data=b"{}",
                                    timeout=5)
    assert unauthenticated.status_code == 401  # the sandbox does require the token
    services = build_services(pas_settings(tmp_path, database_url,
                                           payer_table(payer_sandbox, registered[0])))
    try:
        referrals = [open_accepted(services, 0), open_accepted(services, 1)]
        for referral in referrals:
            [request] = submit(services, referral)
            assert request.status == "approved", request.last_error
            assert services.store.get(referral.id).stage == Stage.OUTREACH
    finally:
        services.close()
    issuer = payer_sandbox.state.issuer
    assert issuer is not None
    assert len(payer_sandbox.state.received) == 2   # both $submit calls got through...
    assert len(issuer.assertions) == 1              # ...with one token, fetched once
    assert issuer.assertions[0]["header"]["alg"] == registered[1]["alg"]


def test_a_new_token_is_fetched_with_a_new_jti(registered: tuple[Path, dict[str, Any]],
                                               payer_sandbox: SandboxServer) -> None:
    client = client_for(payer_sandbox, registered[0])
    assert client.send_inquire(INQUIRY).status == 200
    assert client.send_inquire(INQUIRY).status == 200
    issuer = payer_sandbox.state.issuer
    assert issuer is not None and len(issuer.assertions) == 1
    issuer.issued.clear()   # the payer revokes every token it issued
    refusal = client.send_inquire(INQUIRY)   # returned as received, for the caller to store
    assert refusal.status == 401 and client.token is not None and not client.token.cached()
    with pytest.raises(PeerError, match="refused our access token") as refused:
        raise_for_retry("Blue Horizon", "Claim/$inquire", refusal, token_used=True)
    assert refused.value.retryable
    assert client.send_inquire(INQUIRY).status == 200   # the retry fetches a new token
    first, second = (a["claims"] for a in issuer.assertions)
    assert first["jti"] != second["jti"]
    assert second["aud"] == payer_sandbox.token_url
    assert second["exp"] - second["iat"] <= 300


def test_a_replayed_assertion_is_refused_by_the_sandbox(
        registered: tuple[Path, dict[str, Any]], payer_sandbox: SandboxServer) -> None:
    client = client_for(payer_sandbox, registered[0])
    assert client.token is not None
    form = client.token.form()
    assert requests.post(payer_sandbox.token_url, data=form, timeout=5).status_code == 200
    replay = requests.post(payer_sandbox.token_url, data=form, timeout=5)
    assert replay.status_code == 401 and "jti" in replay.json()["error_description"]


def test_a_wrong_key_is_refused_with_what_to_do(
        tmp_path: Path, registered: tuple[Path, dict[str, Any]],
        payer_sandbox: SandboxServer) -> None:
    other_key, _ = write_key(tmp_path / "other.pem", registered[1]["alg"])
    client = client_for(payer_sandbox, other_key)
    with pytest.raises(PeerError) as refused:
        client.send_submit(b"{}")
    message = str(refused.value)
    assert "token request refused (HTTP 401, invalid_client" in message
    assert "register our public key (key_id k1) for client_id refloop" in message
    assert "key_file" in message
    assert not refused.value.retryable
    assert payer_sandbox.state.received == []   # nothing reached $submit


def test_a_wrong_audience_is_refused(tmp_path: Path, registered: tuple[Path, dict[str, Any]],
                                     payer_sandbox: SandboxServer) -> None:
    table = {"name": PAYER, **payer_table(payer_sandbox, registered[0])}
    # the assertion is sent to the sandbox but claims another token URL as its audience
    client = PayerClient(payer_from_table(table, Organization()))
    assert client.token is not None
    form = client.token.form()
    client.token.auth = payer_from_table({**table, "token_url": "https://elsewhere/token"},
                                         Organization()).auth
    wrong = client.token.form()
    assert requests.post(payer_sandbox.token_url, data=form, timeout=5).status_code == 200
    refused = requests.post(payer_sandbox.token_url, data=wrong, timeout=5)
    assert refused.status_code == 401 and "aud" in refused.json()["error_description"]
