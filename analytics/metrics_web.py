"""Where Prometheus reads the figures: `GET /metrics` on the public port (the wiring protects it
with the `metrics:read` scope), and the metrics role, which serves only `/metrics` on its own
address (127.0.0.1 by default), off the public port, for a Prometheus on the same host or
network."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Blueprint, Response

from analytics.operations import Operations
from analytics.prometheus import exposition

log = logging.getLogger("refloop.metrics")
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def metrics_blueprint(operations: Operations, directory: Path | None) -> Blueprint:
    bp = Blueprint("metrics", __name__)

    @bp.get("/metrics")
    def metrics() -> Response:
        body, content_type = exposition(operations, directory)
        return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})

    return bp


def metrics_role(operations: Operations, directory: Path | None, host: str,
                 port: int) -> Callable[[threading.Event], None]:
    """The metrics role: a small HTTP server answering `GET /metrics` (404 for anything else)."""
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ.get("PATH_INFO") != "/metrics" or environ.get("REQUEST_METHOD") not in (
                "GET", "HEAD"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"only GET /metrics here\n"]
        body, content_type = exposition(operations, directory)
        start_response("200 OK", [("Content-Type", content_type),
                                  ("Cache-Control", "no-store")])
        return [body]

    def run(stop: threading.Event) -> None:
        from werkzeug.serving import make_server

        server = make_server(host, port, app, threaded=True)
        if host not in LOOPBACK:
            log.warning("metrics served without a token on a non-loopback address; keep it "
                        "on a network only Prometheus reaches", extra={"host": host})
        log.info("metrics role listening", extra={"host": host, "port": server.server_port})
        thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
        thread.start()
        stop.wait()
        server.shutdown()

    return run
