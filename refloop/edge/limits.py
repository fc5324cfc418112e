"""The edge's limits, from the core settings."""

from __future__ import annotations

from dataclasses import dataclass

from refloop.settings import Settings


@dataclass(frozen=True)
class EdgeLimits:
    request_seconds: float = 30.0  # request line, headers and body, from the first byte
    keepalive_seconds: float = 15.0  # an idle connection (no request begun) is closed after
    max_per_source: int = 64  # connections per source address and process (0: no limit)
    max_connections: int = 4096  # connections per process
    max_body_bytes: int = 16 * 1024 * 1024  # bodies for the WSGI application
    max_header_bytes: int = 64 * 1024  # request line and headers
    linger_seconds: float = 2.0  # after a refusal, unread input is drained this long
    threads: int = 8  # WSGI threads

    @classmethod
    def from_settings(cls, settings: Settings) -> EdgeLimits:
        return cls(request_seconds=settings.http_request_timeout,
                   keepalive_seconds=settings.http_keepalive_timeout,
                   max_per_source=settings.http_max_connections_per_source,
                   max_connections=settings.http_max_connections,
                   max_body_bytes=settings.http_max_body_bytes,
                   threads=settings.web_threads)
