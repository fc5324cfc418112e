"""What a request's line and headers must be before any route sees them (RFC 9112).

- `CONNECT` asks for a tunnel, which the server does not open: 405 (RFC 9110 §9.3.6).
- A protocol upgrade (`Upgrade` with `Connection: upgrade`) is not offered: 400.
- An HTTP/1.1 request without `Host`, or any request with more than one `Host` line or an
  invalid one, is refused with 400 (RFC 9112 §3.2 says a server MUST).
- A transfer coding other than chunked (`gzip, chunked`) is 501 (RFC 9112 §6.1) for the
  application's paths (`unknown_codings`; a route of the edge decides for itself: a hook keeps
  such a body): the application would read the coded bytes as the body.

Each is answered once, and the connection then closes: what follows on it is not read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from refloop.edge.messages import Answer, outcome

#: the methods some route of the server answers (the Allow header of the 405 to CONNECT)
METHODS = "GET, HEAD, OPTIONS, POST, PUT"
#: uri-host [":" port] (RFC 3986 reg-name, IPv4 or IP-literal); empty is allowed
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(:[0-9]*)?")


def refusal(method: str, version: str, headers: list[tuple[str, str]],
            upgrade: bool) -> Answer | None:
    """The answer to a request whose head breaks one of the rules above, or None."""
    if method == "CONNECT":
        return outcome(405, "not-supported", "CONNECT is not supported: this server is not "
                       "a proxy", headers=(("Allow", METHODS),))
    if upgrade:
        return outcome(400, "not-supported", "protocol upgrades are not supported; send the "
                       "request without Upgrade")
    hosts = [value for name, value in headers if name == "host"]
    if len(hosts) > 1:
        return outcome(400, "structure", "the request has more than one Host header; send "
                       "exactly one")
    if not hosts and version == "1.1":
        return outcome(400, "structure", "an HTTP/1.1 request needs a Host header")
    if hosts and not _HOST.fullmatch(hosts[0].strip(" \t")):
        return outcome(400, "structure", "the Host header is not a valid host[:port]")
    return None


def unknown_codings(headers: Mapping[str, str]) -> Answer | None:
    """501 for a transfer coding other than chunked (the edge decodes no other), or None."""
    codings = [c.strip().lower() for c in headers.get("transfer-encoding", "").split(",")]
    unknown = [c for c in codings if c and c != "chunked"]
    if not unknown:
        return None
    return outcome(501, "not-supported", f"transfer coding {unknown[0][:32]!r} is not "
                   "supported; send the body plain or chunked")
