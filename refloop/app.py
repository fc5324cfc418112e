"""The Flask app factory."""

from __future__ import annotations

import logging
import time
from typing import Any

import sqlalchemy as sa
from flask import Flask, Response, g, jsonify, request

from referrals.store.migrate import pending
from refloop.services import Services
from refloop.wiring import install_routes

log = logging.getLogger("refloop.http")


def create_app(services: Services) -> Flask:
    app = Flask("refloop")
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024 * 1024
    app.extensions["refloop"] = services

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> Any:
        try:
            with services.db.read() as conn:
                conn.execute(sa.text("SELECT 1"))
            missing = pending(services.db)
        except Exception as exc:
            return jsonify(status="unavailable", database=type(exc).__name__), 503
        if missing:
            return jsonify(status="unavailable", database="migrations pending: run "
                           "'refloop db upgrade'", pending=missing), 503
        return jsonify(status="ready", database=services.db.dialect)

    @app.before_request
    def _start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _log(response: Response) -> Response:
        elapsed = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        if request.path not in ("/healthz", "/readyz"):
            log.info("http", extra={"method": request.method, "path": request.url_rule.rule
                                    if request.url_rule else "(unmatched)",
                                    "status": response.status_code, "ms": round(elapsed, 2)})
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    install_routes(app, services)
    return app
