"""The Flask app factory."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa
from flask import Flask, Response, g, jsonify, request

from referrals.store.migrate import pending
from refloop.services import Services
from refloop.wiring import install_routes, modules

log = logging.getLogger("refloop.http")
#: Headers added to every response (unless the handler set them).
SECURITY_HEADERS = (("X-Content-Type-Options", "nosniff"),)
#: WSGI environ key where a lean application puts the route pattern of a request it answered.
ROUTE_KEY = "refloop.route"
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


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
        for name, value in SECURITY_HEADERS:
            response.headers.setdefault(name, value)
        return response

    install_routes(app, services)
    _install_dispatcher(app, services)
    return app


def _install_dispatcher(app: Flask, services: Services) -> None:
    """Wiring modules may serve a path prefix with a plain WSGI application (`wsgi_apps(app,
    services, route_key) -> {prefix: application}`, e.g. the subscriptions hooks), in front of
    Flask; Flask's own app (`fallback`) serves everything else."""
    mounts: dict[str, WSGIApp] = {}
    for module in modules():
        if hasattr(module, "wsgi_apps"):
            mounts.update(module.wsgi_apps(app, services, ROUTE_KEY))
    if mounts:
        app.wsgi_app = Dispatcher(app.wsgi_app, mounts)  # type: ignore[method-assign]


class Dispatcher:
    """Sends PATH_INFO under a mounted prefix to its WSGI application and the rest to Flask.
    For a request the mounted application answers itself (it sets environ[ROUTE_KEY]), the
    dispatcher adds SECURITY_HEADERS and writes the request log line, as Flask's hooks do; a
    request it hands on to Flask is logged by Flask."""

    def __init__(self, flask_app: WSGIApp, mounts: dict[str, WSGIApp]) -> None:
        self.flask_app = flask_app
        self.mounts = tuple(mounts.items())

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        for prefix, target in self.mounts:
            if path.startswith(prefix):
                return target(environ, self._finisher(environ, start_response))
        return self.flask_app(environ, start_response)

    @staticmethod
    def _finisher(environ: dict[str, Any],
                  start_response: Callable[..., Any]) -> Callable[..., Any]:
        started = time.perf_counter()

        def finish(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            route = environ.get(ROUTE_KEY)
            if route is not None:
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0].lower() not in present)
                log.info("http", extra={"method": environ.get("REQUEST_METHOD"), "path": route,
                                        "status": int(status[:3]),
                                        "ms": round((time.perf_counter() - started) * 1000, 2)})
            return start_response(status, headers, exc_info)

        return finish
