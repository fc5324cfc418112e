"""A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message it accepts: for the demo
and the tests of the email channel. Optional STARTTLS or implicit TLS (a self-signed certificate
made on the spot) and AUTH; addresses at bounce.example.org are refused with 550 5.1.1."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass(frozen=True)
class Captured:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    @property
    def message(self) -> EmailMessage:
        parsed: EmailMessage = email.message_from_bytes(self.content,
                                                        policy=email.policy.default)
        return parsed


class _Handler:
    def __init__(self, capture: MailCapture) -> None:
        self.capture = capture

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address.lower().endswith("@bounce.example.org"):
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.capture.lock:
            self.capture.messages.append(Captured(envelope.mail_from, list(envelope.rcpt_tos),
                                                  bytes(envelope.content)))
            self.capture.arrived.notify_all()
        return "250 Message accepted for delivery"


class MailCapture:
    """start() it; host/port to configure [outreach.smtp] with; .messages as they arrive."""

    def __init__(self, *, tls: str = "", username: str = "", password: str = "") -> None:
        self.messages: list[Captured] = []
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self.tls = tls
        self.username, self.password = username, password
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.client_context: ssl.SSLContext | None = None
        self._controller: Controller | None = None

    def start(self) -> MailCapture:
        kwargs: dict[str, Any] = {}
        if self.username:
            kwargs["authenticator"] = self._authenticate
            # aiosmtpd knows TLS only from STARTTLS; an implicit-TLS session is encrypted anyway
            kwargs["auth_require_tls"] = self.tls == "starttls"
        if self.tls:
            server_context, self.client_context = _contexts()
            if self.tls == "starttls":
                kwargs["tls_context"] = server_context
                kwargs["require_starttls"] = True
            else:
                kwargs["ssl_context"] = server_context
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port,
                                      **kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Captured]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and \
            auth_data.login.decode() == self.username and \
            auth_data.password.decode() == self.password
        return AuthResult(success=ok, handled=False)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1: the server's context, and a client context
    that trusts exactly that certificate."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    folder = Path(tempfile.mkdtemp(prefix="refloop-smtp-"))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client
