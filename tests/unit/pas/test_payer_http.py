"""HTTP to a payer that misbehaves: a redirect to another host (never followed: the request
carries patient data), 429 and 408 (try later, not a rejection), a reply longer than
max_reply_bytes, a reply dripped slower than timeout_seconds allows. Against a small HTTP
server written here (a fake payer: a payer cannot run here), on 127.0.0.1 port 0."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pas_client.client import PayerClient, raise_for_retry
from pas_client.config import PayerConfig
from pas_client.reply import UNINTERPRETABLE, read_reply
from referrals.errors import PeerError

Answer = Callable[[BaseHTTPRequestHandler], None]


class Peer:
    """One HTTP server on a free port; `answer` writes the reply; `received` the bodies."""

    def __init__(self) -> None:
        self.answer: Answer = lambda h: send(h, 200, b"{}")
        self.received: list[bytes] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                peer.received.append(self.rfile.read(int(self.headers["Content-Length"])))
                peer.answer(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes,
         headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture(name="peers")
def peers_fixture() -> Iterator[tuple[Peer, Peer]]:
    payer, elsewhere = Peer(), Peer()
    yield payer, elsewhere
    payer.stop()
    elsewhere.stop()


def client(url: str, **config: float) -> PayerClient:
    return PayerClient(PayerConfig(name="Blue Horizon", base_url=url, **config))  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [307, 308, 302])
def test_a_redirect_is_not_followed(peers: tuple[Peer, Peer], status: int) -> None:
    payer, elsewhere = peers
    target = elsewhere.url.replace("127.0.0.1", "localhost") + "/steal"
    payer.answer = lambda h: send(h, status, b"", {"Location": target})
    reply = client(payer.url).send_submit(b'{"resourceType": "Bundle"}')
    assert reply.status == status and reply.headers["Location"] == target
    assert elsewhere.received == []                       # no patient data went there
    reading = read_reply(reply.status, *reply.parsed)
    assert reading.outcome == UNINTERPRETABLE and "redirect" in reading.problem


@pytest.mark.parametrize("status", [429, 408])
def test_try_later_is_retried_not_rejected(peers: tuple[Peer, Peer], status: int) -> None:
    payer, _ = peers
    payer.answer = lambda h: send(h, status, b"", {"Retry-After": "30"})
    reply = client(payer.url).send_submit(b"{}")
    assert reply.retryable and not reply.rejected
    with pytest.raises(PeerError) as raised:
        raise_for_retry("Blue Horizon", "Claim/$submit", reply, token_used=False)
    assert raised.value.retryable


def test_a_reply_longer_than_the_limit_is_not_read(peers: tuple[Peer, Peer]) -> None:
    payer, _ = peers
    payer.answer = lambda h: send(h, 200, b'{"resourceType": "Bundle", "x": "'
                                  + b"x" * 300_000 + b'"}')
    with pytest.raises(PeerError, match="max_reply_bytes") as raised:
        client(payer.url, max_reply_bytes=100_000).send_submit(b"{}")
    assert not raised.value.retryable        # the request is followed with $inquire instead
    assert client(payer.url).send_submit(b"{}").status == 200   # the default limit: 16 MiB


def test_a_reply_dripped_past_the_timeout_is_abandoned(peers: tuple[Peer, Peer]) -> None:
    """Each read is faster than timeout_seconds; the whole reply is not."""
    payer, _ = peers

    def drip(handler: BaseHTTPRequestHandler) -> None:
        body = b'{"resourceType": "Bundle", "type": "collection", "entry": []}'
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        for index in range(0, len(body), 10):
            handler.wfile.write(body[index:index + 10])
            handler.wfile.flush()
            time.sleep(0.15)
    payer.answer = drip
    with pytest.raises(PeerError, match="timeout_seconds") as raised:
        client(payer.url, timeout_seconds=0.4).send_submit(b"{}")
    assert raised.value.retryable
