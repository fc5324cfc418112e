"""Forwarded headers are believed only from trusted proxies; Host-like ones never."""

from __future__ import annotations

from typing import Any

import pytest

from refloop.proxies import PEER_KEY, ProxyHeaders


def seen(trusted: list[str], peer: str, **headers: str) -> dict[str, Any]:
    captured: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        captured.update(environ)
        return []

    environ = {"REMOTE_ADDR": peer, "wsgi.url_scheme": "http",
               **{"HTTP_" + k.upper(): v for k, v in headers.items()}}
    ProxyHeaders(app, trusted)(environ, lambda *a: None)
    return captured


@pytest.mark.parametrize(("trusted", "peer", "xff", "client"), [
    ([], "203.0.113.9", "198.51.100.1", "203.0.113.9"),  # nobody trusted: the peer
    (["10.0.0.5"], "203.0.113.9", "198.51.100.1", "203.0.113.9"),  # untrusted peer lies
    (["10.0.0.5"], "10.0.0.5", "198.51.100.1", "198.51.100.1"),
    (["10.0.0.5"], "10.0.0.5", "1.1.1.1, 198.51.100.1", "198.51.100.1"),  # left part spoofable
    (["10.0.0.0/24"], "10.0.0.5", "198.51.100.1, 10.0.0.7", "198.51.100.1"),  # two proxies
    (["10.0.0.0/24"], "10.0.0.5", "10.0.0.8, 10.0.0.7", "10.0.0.5"),  # all proxies
    (["10.0.0.5"], "10.0.0.5", "", "10.0.0.5"),
    (["10.0.0.5"], "10.0.0.5", "not-an-ip", "10.0.0.5"),
    (["::1"], "::1", "2001:db8::7", "2001:db8::7"),
])
def test_client_address(trusted: list[str], peer: str, xff: str, client: str) -> None:
    environ = seen(trusted, peer, X_FORWARDED_FOR=xff)
    assert environ["REMOTE_ADDR"] == client
    assert environ[PEER_KEY] == peer
    assert "HTTP_X_FORWARDED_FOR" not in environ


def test_scheme_only_from_a_trusted_proxy_and_host_headers_never() -> None:
    trusted = seen(["10.0.0.5"], "10.0.0.5", X_FORWARDED_PROTO="https",
                   X_FORWARDED_HOST="evil.example", FORWARDED="host=evil.example")
    assert trusted["wsgi.url_scheme"] == "https"
    assert "HTTP_X_FORWARDED_HOST" not in trusted and "HTTP_FORWARDED" not in trusted
    stranger = seen(["10.0.0.5"], "203.0.113.9", X_FORWARDED_PROTO="https",
                    X_FORWARDED_HOST="evil.example")
    assert stranger["wsgi.url_scheme"] == "http"
    assert "HTTP_X_FORWARDED_PROTO" not in stranger
    assert seen(["10.0.0.5"], "10.0.0.5", X_FORWARDED_PROTO="gopher")["wsgi.url_scheme"] == \
        "http"
