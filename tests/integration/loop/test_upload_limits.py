"""The upload link through `refloop serve`'s web server (the HTTP edge, real loopback socket), on
SQLite and PostgreSQL: a body over the server's limit gets the upload page saying how large a
file may be, and its first 64 KiB are kept in quarantine under the link's referral (declared or
chunked); a form with two files is refused with 400 and both are kept; an oversized request on a
wrong link gets that link's page and keeps nothing. The limits are set small so the bodies stay
small."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from referrals.model import Command, Referral, new_referral_id
from refloop.app import create_edge_app
from refloop.edge.server import RunningEdge, serve_in_thread
from refloop.services import Services, build_services
from refloop.settings import Settings

LIMIT = 256 * 1024  # the web server's body limit here
BOUNDARY = "b0undary"
PDF = b"%PDF-1.4\n%test\n"


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[tuple[Services, RunningEdge, str]]:
    services = build_services(Settings(
        var_dir=tmp_path / "var", database_url=database_url, http_max_body_bytes=LIMIT,
        log_level="WARNING", sections={"loop": {"max_upload_bytes": 100_000}}))
    draft = Referral(id=new_referral_id(), source_key="hl7|CLINIC|ORM-1",
                     service_request="ServiceRequest/sr-1", patient="Patient/p1")
    referral = services.referrals.open(draft, Command("detect"))[0]
    token = services.adapters["loop"].links.issue(referral.id, "upload", datetime.now(UTC))
    edge = serve_in_thread(create_edge_app(services))
    yield services, edge, token
    edge.stop()
    services.close()


def multipart(*files: tuple[str, bytes]) -> bytes:
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="note"; filename="{name}"'
             f'\r\nContent-Type: application/pdf\r\n\r\n'.encode() + content + b"\r\n"
             for name, content in files]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def post(edge: RunningEdge, path: str, body: bytes, *, chunked: bool = False
         ) -> tuple[int, str, str]:
    """(status, Content-Security-Policy, page) of one request on its own connection."""
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n")
    if chunked:
        head += "Transfer-Encoding: chunked\r\n\r\n"
        data = head.encode() + b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 65536]),
                                                         body[i:i + 65536])
                                        for i in range(0, len(body), 65536)) + b"0\r\n\r\n"
    else:
        data = (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        with contextlib.suppress(OSError):  # the server answered and stopped reading first
            sock.sendall(data)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head_text, _, page = raw.decode("latin-1").partition("\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in head_text.split("\r\n")[1:])
    return int(head_text.split()[1]), headers.get("Content-Security-Policy", ""), page


def kept(services: Services) -> list[bytes]:
    """What the upload link kept, oldest first."""
    entries = sorted(services.quarantine.list(), key=lambda q: q.id)
    return [bytes(q.original) for q in entries if q.kind == "loop.upload"]


def test_refused_uploads_are_kept_and_answered_on_the_page(
        served: tuple[Services, RunningEdge, str]) -> None:
    services, edge, token = served
    referral = services.store.list()[0].id
    big = multipart(("note.pdf", PDF + b"x" * (LIMIT + 1000)))
    for n, chunked in enumerate((False, True)):
        status, csp, page = post(edge, f"/loop/u/{token}", big, chunked=chunked)
        assert status == 413 and "larger than 0.1 MB" in page and "<form" in page, page[:300]
        assert "default-src 'none'" in csp
        assert kept(services)[n:] == [big[:64 * 1024]]
    [entry, _] = [q for q in services.quarantine.list() if q.kind == "loop.upload"]
    assert referral in entry.reason and f"limit of {LIMIT} bytes" in entry.reason
    status, _, page = post(edge, f"/loop/u/{token}", multipart(("a.pdf", PDF + b"a"),
                                                             ("b.pdf", PDF + b"b")))
    assert status == 400 and "Upload one PDF at a time: the form sent 2 files" in page
    assert kept(services)[2:] == [PDF + b"a", PDF + b"b"]
    status, _, page = post(edge, f"/loop/u/{token}x", big)
    assert status == 404 and "This link does not work" in page and len(kept(services)) == 4
    status, _, page = post(edge, "/loop/n/whatever", big)  # no upload here: the 413 page
    assert status == 413 and "The request was too large" in page and len(kept(services)) == 4


def test_a_form_with_no_file_it_can_read_is_refused_and_kept(
        served: tuple[Services, RunningEdge, str]) -> None:
    """A part with no filename (curl -F 'note=<file.pdf') is a form field, not a file, and a
    form whose framing names another boundary holds no part at all: both were answered "Choose
    a PDF file" with an empty entry kept, the PDF lost. Now the answer says what happened and
    the request is kept whole; the link stays unused."""
    services, edge, token = served
    unnamed = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="note"\r\n'
               'Content-Type: application/pdf\r\n\r\n').encode() + PDF + b"\r\n" + \
        f"--{BOUNDARY}--\r\n".encode()
    framed = multipart(("note.pdf", PDF)).replace(BOUNDARY.encode(), b"other")
    for n, body in enumerate((unnamed, framed)):
        status, _, page = post(edge, f"/loop/u/{token}", body)
        assert status == 400 and "did not arrive as a file" in page, page[-600:]
        assert kept(services)[n:] == [body]
    assert all(services.store.list()[0].id in q.reason for q in services.quarantine.list())
    assert post(edge, f"/loop/u/{token}", multipart(("note.pdf", PDF)))[0] == 200


def test_an_upload_cut_by_the_request_deadline_gets_its_page_and_is_kept(
        database_url: str, tmp_path: Path) -> None:
    """A slow upload that the request deadline cuts (a slow line, a client that stops sending)
    got the edge's JSON 408 and nothing was kept; now the upload link keeps what arrived and
    shows its page (408), and the link stays unused."""
    services = build_services(Settings(
        var_dir=tmp_path / "var", database_url=database_url, http_request_timeout=0.5,
        log_level="WARNING", sections={"loop": {"max_upload_bytes": 100_000}}))
    referral = services.referrals.open(Referral(
        id=new_referral_id(), source_key="hl7|CLINIC|ORM-2", service_request="ServiceRequest/2",
        patient="Patient/p2"), Command("detect"))[0]
    token = services.adapters["loop"].links.issue(referral.id, "upload", datetime.now(UTC))
    edge = serve_in_thread(create_edge_app(services))
    try:
        body = multipart(("note.pdf", PDF + b"x" * 5000))
        head = (f"POST /loop/u/{token} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data;"
                f" boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
            sock.sendall(head + body[:3000])  # and nothing more: the deadline answers
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
        status_line, _, page = raw.decode("latin-1").partition("\r\n")
        assert " 408 " in status_line and "did not arrive within" in page, raw[:400]
        assert kept(services) == [body[:3000]]
        assert referral.id in services.quarantine.list()[0].reason
        assert post(edge, f"/loop/u/{token}", multipart(("note.pdf", PDF)))[0] == 200
    finally:
        edge.stop()
        services.close()
