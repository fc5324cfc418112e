"""The listener's optional TLS, on SQLite and PostgreSQL, with a throwaway CA, server and client
certificates made in the test with `cryptography`: a client with a certificate gets its ACK, a
client without one is refused when client certificates are required (nothing stored), a sender
bound to a certificate CN gets AR with another certificate, and TLS without client CA serves
clients without certificates."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hl7_bridge.client import MllpClient
from hl7_bridge.config import load_config
from hl7_bridge.send import summarise_ack
from referrals.store.schema import inbox
from refloop.services import Services

from .conftest import listening

MESSAGE = (b"MSH|^~\\&|GPSYS|GPCLINIC|HUB|HUB|20240101120000||ADT^A04|T1|P|2.5.1\r"
           b"PID|1||T1^^^HOSP^MR||Doe^Jane||19800101|F\r")


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_cert: Path
    other_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(tmp: Path, stem: str, cn: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey]
           | None, *, ca: bool = False, server: bool = False
           ) -> tuple[Path, Path, x509.Name, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer else (_name(cn), key)
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
    elif server:
        builder = (builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False))
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    cert_path, key_path = tmp / f"{stem}.pem", tmp / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path, _name(cn), key


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca_cert, _, ca_name, ca_key = _issue(tmp_path, "ca", "Refloop test CA", None, ca=True)
    server = _issue(tmp_path, "server", "127.0.0.1", (ca_name, ca_key), server=True)
    client = _issue(tmp_path, "client", "gp-clinic", (ca_name, ca_key))
    other = _issue(tmp_path, "other", "somebody-else", (ca_name, ca_key))
    return Pki(ca_cert, server[0], server[1], client[0], client[1], other[0], other[1])


def _config(pki: Pki, *, client_ca: bool) -> object:
    return load_config({
        "port": 0, "tls_cert": str(pki.server_cert), "tls_key": str(pki.server_key),
        "tls_client_ca": str(pki.ca) if client_ca else "",
        "senders": {"GPSYS^GPCLINIC": {"certificate_cn": "gp-clinic" if client_ca else ""}}})


def _client_context(pki: Pki, cert: Path | None = None, key: Path | None = None
                    ) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


def _send_without_certificate(pki: Pki, port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            _client_context(pki).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"\x0b" + MESSAGE.replace(b"|T1|", b"|T2|") + b"\x1c\r")
        if not tls.recv(4096):
            raise EOFError("closed without an ACK")


def _stored(services: Services) -> int:
    with services.db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(inbox)).scalar() or 0)


def test_client_certificate_required(services: Services, pki: Pki) -> None:
    with listening(services, _config(pki, client_ca=True)) as port:
        # with the right certificate: stored and ACKed
        context = _client_context(pki, pki.client_cert, pki.client_key)
        with MllpClient("127.0.0.1", port, 5, tls=context) as client:
            assert summarise_ack(client.send(MESSAGE))["code"] == "AA"
        assert _stored(services) == 1

        # without a certificate: the handshake is refused, nothing is ACKed or stored
        with pytest.raises((ssl.SSLError, ConnectionError, EOFError)):
            _send_without_certificate(pki, port)
        assert _stored(services) == 1

        # a plain-text client gets nothing, and the listener keeps serving
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(b"\x0b" + MESSAGE.replace(b"|T1|", b"|T3|") + b"\x1c\r")
            try:
                answer = raw.recv(4096)
            except ConnectionError:
                answer = b""
            assert b"MSA" not in answer
        assert _stored(services) == 1

        # a valid certificate with another CN is not this sender: AR 207, kept in quarantine
        context = _client_context(pki, pki.other_cert, pki.other_key)
        with MllpClient("127.0.0.1", port, 5, tls=context) as client:
            summary = summarise_ack(client.send(MESSAGE.replace(b"|T1|", b"|T4|")))
        assert summary["code"] == "AR" and "207" in summary["errors"][0]
        assert len(services.quarantine.list()) == 1


def test_tls_without_client_certificates(services: Services, pki: Pki) -> None:
    with listening(services, _config(pki, client_ca=False)) as port:
        with MllpClient("127.0.0.1", port, 5, tls=_client_context(pki)) as client:
            assert summarise_ack(client.send(MESSAGE))["code"] == "AA"
        # a client that does not trust our CA refuses us (the server presents its certificate)
        with pytest.raises(ssl.SSLCertVerificationError), \
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")
    assert _stored(services) == 1
