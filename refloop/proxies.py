"""Forwarded headers, believed only from the reverse proxies listed in `trusted_proxies`.

From a trusted proxy, the client address is the right-most X-Forwarded-For entry that is not
itself a trusted proxy (what the outermost proxy we trust saw), and X-Forwarded-Proto sets the
scheme. From anyone else both are dropped, so no code further in can be fooled by them.
X-Forwarded-Host, X-Forwarded-Port, X-Forwarded-Prefix and Forwarded are always dropped:
absolute URLs come from public_base_url only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: the peer a request arrived from (the proxy, when one is trusted), kept for logs and limits
PEER_KEY = "refloop.peer"
NEVER = ("HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_PREFIX",
         "HTTP_X_FORWARDED_SERVER", "HTTP_FORWARDED", "HTTP_X_REAL_IP")
FROM_PROXIES = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO")


class ProxyHeaders:
    def __init__(self, app: WSGIApp, trusted: Iterable[str]) -> None:
        self.app = app
        self.trusted: tuple[Network, ...] = tuple(ipaddress.ip_network(t, strict=False)
                                                  for t in trusted)

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        peer = str(environ.get("REMOTE_ADDR", ""))
        environ[PEER_KEY] = peer
        for name in NEVER:
            environ.pop(name, None)
        forwarded_for = environ.pop("HTTP_X_FORWARDED_FOR", "")
        proto = environ.pop("HTTP_X_FORWARDED_PROTO", "")
        if self.is_trusted(peer):
            client = self.client(peer, str(forwarded_for))
            environ["REMOTE_ADDR"] = client
            scheme = str(proto).split(",")[-1].strip().lower()
            if scheme in ("http", "https"):
                environ["wsgi.url_scheme"] = scheme
        return self.app(environ, start_response)

    def is_trusted(self, address: str) -> bool:
        if not self.trusted:
            return False
        try:
            ip = ipaddress.ip_address(address.strip().strip("[]"))
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)

    def client(self, peer: str, forwarded_for: str) -> str:
        """The right-most address that is not a trusted proxy (the peer when all are)."""
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self.is_trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop.strip("[]")))
                except ValueError:
                    return peer  # a proxy we trust passed on garbage: believe only the proxy
        return peer
