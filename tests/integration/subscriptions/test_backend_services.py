"""SMART Backend Services against sekmet-fhir's token endpoint, with RS384 and ES384 keys; the
server fetches our public keys from Refloop's /.well-known/jwks.json."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from referrals.errors import PeerError
from subscriptions.adapter import SubscriptionsAdapter
from subscriptions.auth import BackendServicesAuth


def write_key(path: Path, alg: str) -> None:
    key: Any = ec.generate_private_key(ec.SECP384R1()) if alg == "ES384" else \
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def segment(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_backend_services_token_and_protected_reads(
        alg: str, database_url: str, tmp_path: Path, kit: SimpleNamespace) -> None:
    key_file = tmp_path / f"refloop-{alg}.pem"
    write_key(key_file, alg)
    port = kit.free_port()
    ehr = kit.start_sekmet(tmp_path / "ehr", server_auth={
        "types": ["smart"], "smart_clients": [{
            "client_id": "refloop", "scopes": "system/*.read system/*.write",
            "jwks_url": f"http://127.0.0.1:{port}/.well-known/jwks.json"}]})
    services = kit.build_listener_services(database_url, tmp_path / "var", {"fhir_servers": [{
        "base_url": ehr.base, "auth": "backend-services", "client_id": "refloop",
        "key_file": str(key_file), "key_id": f"refloop-{alg.lower()}", "alg": alg,
        "scope": "system/*.read system/*.write"}]}, port)
    listener = kit.Listener(services, port)
    listener.start()
    try:
        assert requests.get(f"{ehr.base}/Patient", timeout=5).status_code == 401
        jwks = requests.get(f"http://127.0.0.1:{port}/.well-known/jwks.json", timeout=5).json()
        assert [(k["kid"], k["alg"]) for k in jwks["keys"]] == [(f"refloop-{alg.lower()}", alg)]
        assert all("d" not in k for k in jwks["keys"])  # public halves only
        subs: SubscriptionsAdapter = services.adapters["subscriptions"]
        client = subs.client_for(ehr.base)
        auth = client.authorize
        assert isinstance(auth, BackendServicesAuth)
        assert client.get("metadata").status == 200
        first = auth.last_assertion
        token = auth(False)
        assert auth(False) == token  # cached
        auth(True)  # a second token request: sekmet refuses a replayed jti
        second = auth.last_assertion
        header, claims = segment(first, 0), segment(first, 1)
        assert (header["alg"], header["kid"]) == (alg, f"refloop-{alg.lower()}")
        assert claims["iss"] == claims["sub"] == "refloop"
        assert claims["aud"] == ehr.base.rsplit("/fhir", 1)[0] + "/auth/token"
        assert 0 < claims["exp"] - time.time() <= 300
        assert segment(second, 1)["jti"] != claims["jti"]
        created = client.send("POST", "Patient", body=kit.patient(), ok=(201,)).body
        assert client.get(f"Patient/{created['id']}").body["id"] == created["id"]
    finally:
        listener.stop()
        services.close()
        ehr.server.should_exit = True
        ehr.thread.join(timeout=10)


def test_a_refused_client_gets_a_clear_error(database_url: str, tmp_path: Path,
                                             kit: SimpleNamespace) -> None:
    key_file = tmp_path / "unknown.pem"
    write_key(key_file, "ES384")
    ehr = kit.start_sekmet(tmp_path / "ehr", server_auth={"types": ["smart"],
                                                          "smart_clients": []})
    services = kit.build_listener_services(database_url, tmp_path / "var", {"fhir_servers": [{
        "base_url": ehr.base, "auth": "backend-services", "client_id": "stranger",
        "key_file": str(key_file), "alg": "ES384"}]})
    try:
        subs: SubscriptionsAdapter = services.adapters["subscriptions"]
        with pytest.raises(PeerError, match=r"token request .* refused .*invalid_client"):
            subs.client_for(ehr.base).get("metadata")
    finally:
        services.close()
        ehr.server.should_exit = True
        ehr.thread.join(timeout=10)
