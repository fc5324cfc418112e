"""A small blocking MLLP client: send a message, read its ACK (the CLI and outbound messages).

Reads until the end block, however the bytes are split (never one recv = one frame).
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

from hl7_bridge.framing import FrameDecoder, build_frame
from referrals.errors import PeerError


@dataclass
class MllpClient:
    host: str
    port: int
    timeout: float = 10.0
    tls: ssl.SSLContext | None = None
    _sock: socket.socket | None = None
    _decoder: FrameDecoder | None = None

    def __enter__(self) -> MllpClient:
        self.connect()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def connect(self) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise PeerError(f"cannot connect to MLLP peer {self.host}:{self.port}: {exc}") \
                from exc
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        self._sock = sock
        self._decoder = FrameDecoder()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def send(self, message: bytes) -> bytes:
        """Send one message and return the payload of the ACK frame."""
        if self._sock is None or self._decoder is None:
            self.connect()
        assert self._sock is not None and self._decoder is not None
        try:
            self._sock.sendall(build_frame(message))
            while True:
                data = self._sock.recv(65536)
                if not data:
                    raise PeerError(f"MLLP peer {self.host}:{self.port} closed the connection "
                                    "without an ACK")
                frames = self._decoder.feed(data)
                if frames:
                    return frames[0]
        except OSError as exc:
            self.close()
            raise PeerError(f"MLLP exchange with {self.host}:{self.port} failed: {exc}") \
                from exc
