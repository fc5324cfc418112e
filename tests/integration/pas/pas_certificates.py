"""Throwaway certificates for the mutual-TLS tests, made with `cryptography`: a CA, a server
certificate for 127.0.0.1 and a client certificate, all signed by that CA and valid for a day."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pair:
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class Certificates:
    ca_file: Path
    server: Pair
    client: Pair
    stranger: Pair   # a client certificate from another CA


def name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def write_pair(folder: Path, stem: str, cert: x509.Certificate,
               key: ec.EllipticCurvePrivateKey) -> Pair:
    cert_file, key_file = folder / f"{stem}.crt", folder / f"{stem}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return Pair(cert_file, key_file)


def issue(subject: str, issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey,
          key: ec.EllipticCurvePrivateKey, *, ca: bool = False, server: bool = False
          ) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(minutes=5))
               .not_valid_after(now + timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    if not ca:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_certificates(folder: Path) -> Certificates:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("Refloop test CA", name("Refloop test CA"), ca_key, ca_key, ca=True)
    ca_file = folder / "ca.crt"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), \
        ec.generate_private_key(ec.SECP256R1())
    other_ca_key, stranger_key = ec.generate_private_key(ec.SECP256R1()), \
        ec.generate_private_key(ec.SECP256R1())
    return Certificates(
        ca_file=ca_file,
        server=write_pair(folder, "server", issue("127.0.0.1", ca.subject, ca_key, server_key,
                                                  server=True), server_key),
        client=write_pair(folder, "client", issue("refloop-pas-client", ca.subject, ca_key,
                                                  client_key), client_key),
        stranger=write_pair(folder, "stranger", issue("someone-else", name("Other CA"),
                                                      other_ca_key, stranger_key),
                            stranger_key))
