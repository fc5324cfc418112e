"""The HTTP edge on a real loopback port, with raw sockets: complete bodies only (truncated,
bad chunked framing, oversized), the request deadline, the per-source connection limit, the
per-hook rate limit, and 100 stalled authenticated uploads that leave /healthz and valid
notifications answering. Every bound is small and every wait is bounded."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from refloop.app import create_edge_app
from refloop.edge.server import RunningEdge, serve_in_thread
from refloop.services import Services, build_services
from refloop.settings import Settings
from subscriptions.registry import Hook

SR = {"resourceType": "ServiceRequest", "id": "sr-1", "meta": {"versionId": "1"},
      "status": "active", "intent": "order", "subject": {"reference": "Patient/1"}}


def start(services: Services) -> RunningEdge:
    return serve_in_thread(create_edge_app(services), "127.0.0.1", 0)


@pytest.fixture
def edge_services(sqlite_url: str, tmp_path: Path) -> Iterator[Services]:
    built = build_services(Settings(
        var_dir=tmp_path / "var", database_url=sqlite_url, http_request_timeout=1.5,
        http_max_connections_per_source=40,
        sections={"subscriptions": {"max_body_bytes": 4096, "rate_limit": 5,
                                    "rate_burst": 5}}))
    yield built
    built.close()


@pytest.fixture
def edge(edge_services: Services) -> Iterator[RunningEdge]:
    running = start(edge_services)
    yield running
    running.stop()


def open_hook(services: Services) -> Hook:
    subs = services.adapters["subscriptions"]
    hook: Hook = subs.registry.open_hook(server="http://ehr.invalid/fhir", purpose="referrals",
                                         deliver_kind="subscriptions.referral")
    return hook


def raw_request(port: int, data: bytes, *, half_close: bool = True, source: str = "127.0.0.1",
                timeout: float = 5.0) -> bytes:
    """Send `data`, optionally half-close, read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                  source_address=(source, 0)) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and closed first (a refused connection)
            pass
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def parse_answer(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, \
        json.loads(body) if body else None


def put_head(hook: Hook, length: int | None = None, chunked: bool = False) -> bytes:
    framing = "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {length}\r\n"
    return (f"PUT /hooks/{hook.id}/ServiceRequest/sr-1 HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {hook.secret}\r\nContent-Type: application/fhir+json\r\n"
            f"{framing}\r\n").encode()


def valid_put(edge: RunningEdge, hook: Hook, n: int = 1) -> requests.Response:
    body = {**SR, "id": f"ok-{n}"}
    return requests.put(f"http://127.0.0.1:{edge.port}/hooks/{hook.id}/ServiceRequest/ok-{n}",
                        json=body, timeout=5, headers={
                            "Authorization": f"Bearer {hook.secret}",
                            "Content-Type": "application/fhir+json"})


def test_truncated_body_is_never_acknowledged_and_is_kept(edge: RunningEdge,
                                                          edge_services: Services) -> None:
    hook = open_hook(edge_services)
    body = json.dumps(SR).encode()
    answer = raw_request(edge.port, put_head(hook, len(body) + 500) + body)
    status, _, outcome = parse_answer(answer)
    assert status == 400 and outcome["issue"][0]["code"] == "incomplete"
    assert edge_services.inbox.counts() == {"rejected": 1}
    kept = edge_services.quarantine.list()
    assert [bytes(k.original) for k in kept] == [body]
    assert "truncated" in kept[0].reason
    assert edge_services.work.counts() == {}
    assert valid_put(edge, hook).status_code == 200


def test_chunked_body_without_last_chunk_and_bad_chunk_size(edge: RunningEdge,
                                                            edge_services: Services) -> None:
    hook = open_hook(edge_services)
    body = json.dumps(SR).encode()
    unfinished = put_head(hook, chunked=True) + b"%x\r\n%s\r\n" % (len(body), body)
    status, _, outcome = parse_answer(raw_request(edge.port, unfinished))
    assert status == 400 and outcome["issue"][0]["code"] == "incomplete"
    bad = put_head(hook, chunked=True) + b"zz\r\n" + body + b"\r\n0\r\n\r\n"
    status, _, outcome = parse_answer(raw_request(edge.port, bad))
    assert status == 400 and outcome["issue"][0]["code"] == "structure"
    assert edge_services.inbox.counts() == {"rejected": 2}
    assert len(edge_services.quarantine.list()) == 2
    whole = put_head(hook, chunked=True) + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    status, _, _ = parse_answer(raw_request(edge.port, whole))
    assert status == 200
    assert edge_services.inbox.counts() == {"rejected": 2, "received": 1}


def test_oversized_body_is_413_outcome_with_the_first_bytes_kept(
        edge: RunningEdge, edge_services: Services) -> None:
    hook = open_hook(edge_services)
    declared = 10 * 1024 * 1024 * 1024  # 10 GB declared: only max_body_bytes is read
    answer = raw_request(edge.port, put_head(hook, declared) + b"{" + b" " * 8000,
                         half_close=False)
    status, _, outcome = parse_answer(answer)
    assert status == 413 and outcome["issue"][0]["code"] == "too-costly"
    kept = edge_services.quarantine.list()
    assert len(kept) == 1 and len(kept[0].original) == 4096
    status, _, _ = parse_answer(raw_request(edge.port, put_head(hook, chunked=True) +
                                            b"2000\r\n" + b" " * 0x2000 + b"\r\n0\r\n\r\n"))
    assert status == 413
    assert valid_put(edge, hook).status_code == 200


def test_request_deadline_answers_408_and_keeps_what_arrived(
        edge: RunningEdge, edge_services: Services) -> None:
    hook = open_hook(edge_services)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", edge.port), timeout=5) as sock:
        sock.sendall(put_head(hook, 500) + b'{"resourceType"')
        answer = sock.recv(65536)
    assert time.monotonic() - started < 4.5  # the deadline is 1.5 s
    status, headers, outcome = parse_answer(answer)
    assert status == 408 and outcome["issue"][0]["code"] == "timeout"
    assert headers["connection"] == "close"
    assert [bytes(k.original) for k in edge_services.quarantine.list()] == [b'{"resourceType"']
    with socket.create_connection(("127.0.0.1", edge.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # headers never end
        status, _, _ = parse_answer(sock.recv(65536))
    assert status == 408


def test_per_source_connection_limit(edge: RunningEdge, edge_services: Services) -> None:
    held = [socket.create_connection(("127.0.0.1", edge.port), timeout=5,
                                     source_address=("127.0.0.3", 0)) for _ in range(40)]
    try:
        time.sleep(0.2)
        answer = raw_request(edge.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                             source="127.0.0.3")
        status, headers, outcome = parse_answer(answer)
        assert status == 503 and headers["retry-after"] == "1"
        assert outcome["issue"][0]["code"] == "throttled"
        other = raw_request(edge.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert parse_answer(other)[0] == 200  # another source is not affected
    finally:
        for sock in held:
            sock.close()


def test_rate_limit_answers_429_with_retry_after(edge: RunningEdge,
                                                 edge_services: Services) -> None:
    hook = open_hook(edge_services)
    statuses = [valid_put(edge, hook, n).status_code for n in range(8)]
    assert statuses[:5] == [200] * 5 and 429 in statuses[5:]
    limited = valid_put(edge, hook, 99)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["issue"][0]["code"] == "throttled"
    assert edge_services.quarantine.list() == []  # not bad input: nothing kept
    assert edge_services.inbox.counts() == {"received": 5}


def test_null_and_unknown_resource_type_are_400(edge: RunningEdge,
                                                edge_services: Services) -> None:
    hook = open_hook(edge_services)
    url = f"http://127.0.0.1:{edge.port}/hooks/{hook.id}"
    headers = {"Authorization": f"Bearer {hook.secret}",
               "Content-Type": "application/fhir+json"}
    for body in (b"null", b'{"resourceType":"Foo"}'):
        r = requests.post(url, data=body, headers=headers, timeout=5)
        assert r.status_code == 400 and r.json()["issue"][0]["code"] == "structure"
    deep = b"[" * 2000 + b"]" * 2000
    r = requests.post(url, data=deep, headers=headers, timeout=5)
    assert r.status_code == 400 and "nested deeper than 200" in r.text
    assert len(edge_services.quarantine.list()) == 3


def test_100_stalled_uploads_leave_health_and_notifications_answering(
        sqlite_url: str, tmp_path: Path) -> None:
    services = build_services(Settings(var_dir=tmp_path / "var", database_url=sqlite_url,
                                       http_request_timeout=20.0))
    running = start(services)
    stalled: list[socket.socket] = []
    try:
        hook = open_hook(services)
        body = json.dumps(SR).encode()
        for n in range(100):  # authenticated uploads that stop half way, from 4 addresses
            sock = socket.create_connection(("127.0.0.1", running.port), timeout=5,
                                            source_address=(f"127.0.0.{2 + n % 4}", 0))
            sock.sendall(put_head(hook, len(body)) + body[: len(body) // 2])
            stalled.append(sock)
        time.sleep(0.3)
        started = time.monotonic()
        health = requests.get(f"http://127.0.0.1:{running.port}/healthz", timeout=2)
        stored = [valid_put(running, hook, n).status_code for n in range(20)]
        elapsed = time.monotonic() - started
        assert health.status_code == 200 and stored == [200] * 20
        assert elapsed < 10  # answered without waiting for any stalled client
        assert services.inbox.counts() == {"received": 20}
    finally:
        for sock in stalled:
            sock.close()
        running.stop()
        services.close()
    # the stalled uploads were authenticated: each one's first half is kept as truncated
    kept = services.quarantine.list()
    assert len(kept) == 100 and all("truncated" in k.reason for k in kept)


def test_transfer_and_content_codings_we_do_not_decode_are_refused(
        edge: RunningEdge, edge_services: Services) -> None:
    """`Transfer-Encoding: gzip, chunked` is 501, `Content-Encoding: gzip` 415 (never read as if
    plain), both kept in quarantine; plain chunked and `identity` are served."""
    hook = open_hook(edge_services)
    body = json.dumps(SR).encode()
    chunks = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    gzip_chunked = put_head(hook, chunked=True).replace(b"chunked", b"gzip, chunked")
    status, _, outcome = parse_answer(raw_request(edge.port, gzip_chunked + chunks))
    assert status == 501 and outcome["issue"][0]["code"] == "not-supported"
    gzipped = put_head(hook, len(body)).replace(b"\r\n\r\n", b"\r\nContent-Encoding: gzip"
                                               b"\r\n\r\n")
    status, _, outcome = parse_answer(raw_request(edge.port, gzipped + body))
    assert status == 415 and "content coding 'gzip'" in outcome["issue"][0]["diagnostics"]
    assert edge_services.inbox.counts() == {"rejected": 2}
    for path in ("/auth/token", "/fhir/Task", "/loop/u/x"):  # the app's paths: the edge says
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n" \
            "Transfer-Encoding: chunked\r\n\r\n"
        status, _, outcome = parse_answer(raw_request(edge.port, head.encode() + chunks))
        assert (path, status, outcome["issue"][0]["code"]) == (path, 501, "not-supported")
    identity = put_head(hook, len(body)).replace(b"\r\n\r\n", b"\r\nContent-Encoding: "
                                                b"identity\r\n\r\n")
    assert parse_answer(raw_request(edge.port, identity + body))[0] == 200
    assert parse_answer(raw_request(edge.port, put_head(hook, chunked=True) + chunks))[0] == 200


def test_a_request_line_with_another_http_version_is_505(edge: RunningEdge,
                                                         edge_services: Services) -> None:
    hook = open_hook(edge_services)
    body = json.dumps(SR).encode()
    two = put_head(hook, len(body)).replace(b"HTTP/1.1", b"HTTP/2.0", 1)
    status, _, outcome = parse_answer(raw_request(edge.port, two + body))
    assert status == 505 and outcome["issue"][0]["code"] == "not-supported"
    assert edge_services.inbox.counts() == {}
    assert parse_answer(raw_request(edge.port, put_head(hook, len(body)) + body))[0] == 200


def answers(raw: bytes) -> list[tuple[int, str]]:
    """Each answer in `raw`: its status and Connection header ('' when absent)."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
        length = int(headers["content-length"])
        found.append((int(lines[0].split()[1]), headers.get("connection", "")))
        raw = rest[length:]
    return found


def test_connections_persist_and_close_as_rfc_9112_says(edge: RunningEdge) -> None:
    """RFC 9112 9.3 and 9.6: nothing after a request that closes the connection is answered
    (a pipelining client sends it again elsewhere; a 400 answer for it read as the answer to
    its next request); an HTTP/1.0 client asking keep-alive is told it is kept; answers to
    requests a half-closed client pipelined say close on the last one only."""
    get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    close = get.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    assert answers(raw_request(edge.port, close + get, half_close=False)) == [(200, "close")]
    old = b"GET /healthz HTTP/1.0\r\n\r\n"
    assert answers(raw_request(edge.port, old + get, half_close=False)) == [(200, "close")]
    kept = b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    assert answers(raw_request(edge.port, kept + close, half_close=False)) == [
        (200, "keep-alive"), (200, "close")]
    first, second, last = answers(raw_request(edge.port, get + get + get))
    assert first == second == (200, "") and last[0] == 200  # the last: close once EOF is read


def test_a_head_answer_gives_the_length_get_would(edge: RunningEdge) -> None:
    """RFC 9110 8.6: a HEAD answer's Content-Length is the GET answer's, or absent (it was 0)."""
    for path in ("/healthz", "/auth/token", "/nothing"):
        get = raw_request(edge.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = raw_request(edge.port, f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        get_head, _, body = get.partition(b"\r\n\r\n")
        head_head, _, nothing = head.partition(b"\r\n\r\n")
        assert nothing == b"" and head_head.split(b"\r\n")[0] == get_head.split(b"\r\n")[0]
        assert f"Content-Length: {len(body)}\r\n".encode() in head_head + b"\r\n", path


def test_a_method_nobody_implements_is_501(edge: RunningEdge) -> None:
    """RFC 9110 15.6.2: an unknown method (methods are case-sensitive: `get` is one) is 501, not
    a 400 for bad framing; the connection then closes."""
    for method in ("BREW", "get"):
        raw = raw_request(edge.port, f"{method} /healthz HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, headers, outcome = parse_answer(raw)
        assert (status, outcome["issue"][0]["code"]) == (501, "not-supported")
        assert headers["connection"] == "close"
