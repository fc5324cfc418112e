"""Mutual TLS to the payer: our client presents its certificate; without one, or with one the
payer does not trust, the payer refuses and we report a PeerError that says what to check.

The payer is the PAYER SANDBOX (pas_client/sandbox), a fake, because a payer's PAS endpoint
cannot run here. It runs behind TLS on 127.0.0.1 (werkzeug, port 0) and requires a client
certificate signed by a throwaway CA the test makes with `cryptography`."""

from __future__ import annotations

import json
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from pas_client.client import PayerClient
from pas_client.config import Organization, payer_from_table
from pas_client.sandbox import SandboxRules, SandboxServer
from referrals.errors import PeerError
from referrals.model import Stage
from refloop.services import build_services

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pas_certificates import Certificates, make_certificates
from pas_referrals import PAYER, open_accepted, pas_settings, submit

INQUIRY = json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
    {"resource": {"resourceType": "Claim", "patient": {"reference": "Patient/p1"}}}]}).encode()


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path)


@pytest.fixture
def tls_sandbox(certificates: Certificates) -> Iterator[SandboxServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates.server.cert_file, certificates.server.key_file)
    context.load_verify_locations(certificates.ca_file)
    context.verify_mode = ssl.CERT_REQUIRED
    server = SandboxServer(SandboxRules(default="approve"), ssl_context=context).start()
    yield server
    server.stop()


def mtls_table(sandbox: SandboxServer, certificates: Certificates) -> dict[str, Any]:
    return {"base_url": sandbox.url, "auth": "mtls", "ca_file": str(certificates.ca_file),
            "cert_file": str(certificates.client.cert_file),
            "cert_key_file": str(certificates.client.key_file)}


def client(table: dict[str, Any]) -> PayerClient:
    return PayerClient(payer_from_table({"name": PAYER, **table}, Organization()))


def common_name(pem: str) -> str:
    subject = x509.load_pem_x509_certificate(pem.encode()).subject
    return str(subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_submit_presents_our_client_certificate(database_url: str, tmp_path: Path,
                                                certificates: Certificates,
                                                tls_sandbox: SandboxServer) -> None:
    assert tls_sandbox.url.startswith("https://127.0.0.1:")
    services = build_services(pas_settings(tmp_path, database_url,
                                           mtls_table(tls_sandbox, certificates)))
    try:
        referral = open_accepted(services, 0)
        [request] = submit(services, referral)
        assert request.status == "approved", request.last_error
        assert services.store.get(referral.id).stage == Stage.OUTREACH
    finally:
        services.close()
    assert len(tls_sandbox.state.received) == 1
    assert [common_name(c) for c in tls_sandbox.state.client_certificates] == \
        ["refloop-pas-client"]


def test_without_a_client_certificate_the_payer_refuses(certificates: Certificates,
                                                        tls_sandbox: SandboxServer) -> None:
    table = {"base_url": tls_sandbox.url, "ca_file": str(certificates.ca_file)}  # auth none
    with pytest.raises(PeerError) as refused:
        client(table).send_inquire(INQUIRY)
    message = str(refused.value)
    assert "TLS handshake failed" in message
    assert 'auth = "mtls" with cert_file and cert_key_file' in message
    assert tls_sandbox.state.client_certificates == []


def test_a_certificate_from_another_ca_is_refused(certificates: Certificates,
                                                  tls_sandbox: SandboxServer) -> None:
    table = {**mtls_table(tls_sandbox, certificates),
             "cert_file": str(certificates.stranger.cert_file),
             "cert_key_file": str(certificates.stranger.key_file)}
    with pytest.raises(PeerError, match="TLS handshake failed"):
        client(table).send_inquire(INQUIRY)
    assert tls_sandbox.state.client_certificates == []


def test_an_untrusted_payer_certificate_says_to_check_ca_file(
        certificates: Certificates, tls_sandbox: SandboxServer) -> None:
    table = {**mtls_table(tls_sandbox, certificates), "ca_file": ""}  # system trust only
    with pytest.raises(PeerError, match="check that ca_file trusts the payer's certificate"):
        client(table).send_inquire(INQUIRY)


def test_a_missing_certificate_file_says_which(tmp_path: Path, certificates: Certificates,
                                               tls_sandbox: SandboxServer) -> None:
    table = {**mtls_table(tls_sandbox, certificates),
             "cert_file": str(tmp_path / "absent.crt")}
    with pytest.raises(PeerError, match="check cert_file and cert_key_file"):
        client(table).send_inquire(INQUIRY)
