"""The Flask app factory, and the edge application `refloop serve` runs around it."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from referrals.store.migrate import pending
from refloop import error_pages, oversized, request_guard
from refloop.core_services import Services
from refloop.home import home_routes
from refloop.logs import redact_request_lines, redact_text
from refloop.proxies import ProxyHeaders
from refloop.wiring import install_routes, modules

if TYPE_CHECKING:
    from refloop.edge.messages import Head
    from refloop.edge.server import EdgeApp

log = logging.getLogger("refloop.http")
#: Headers added to every response (unless the handler set them).
SECURITY_HEADERS = (("X-Content-Type-Options", "nosniff"),)
#: quarantine kind of requests that failed unexpectedly (the catch-all)
FAILED_REQUEST = "http.request"


#: the app's mark: a looped arrow on the app's accent colour
FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
           '<rect width="32" height="32" rx="6" fill="#1f5fa8"/>'
           '<path d="M9 20a8 8 0 1 1 8 4" fill="none" stroke="#fff" stroke-width="3"/>'
           '<path d="M14 19l3 5-5 2z" fill="#fff"/></svg>')


def create_app(services: Services) -> Flask:
    redact_request_lines()
    app = Flask("refloop")
    app.config["MAX_CONTENT_LENGTH"] = services.settings.http_max_body_bytes
    app.extensions["refloop"] = services

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    @app.get("/favicon.ico")
    def favicon() -> Response:
        """Browsers ask every site for it; a small SVG mark instead of a 404 in every log."""
        return Response(FAVICON, mimetype="image/svg+xml",
                        headers={"Cache-Control": "max-age=86400"})

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

    oversized.install(app)

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

    @app.errorhandler(Exception)
    def _failed(exc: Exception) -> Any:
        """The catch-all: any exception a view did not handle is logged once with its
        traceback and a correlation id, the request is kept in quarantine, and the answer is a
        500 OperationOutcome carrying the same id."""
        if isinstance(exc, HTTPException):
            if request.path.startswith(FHIR_PATHS):
                return _client_error(exc)
            return error_pages.page_for(app, request.path, exc) or exc
        correlation = uuid.uuid4().hex[:16]
        rule = request.url_rule.rule if request.url_rule else "(unmatched)"
        log.error("http: request failed", exc_info=exc, extra={
            "correlation_id": correlation, "method": request.method, "path": rule})
        keep_request(services, request.method, request.full_path, request.get_data(),
                     f"internal error {correlation}: {type(exc).__name__}",
                     request.content_type or "")
        return Response(json.dumps(internal_error(correlation)), status=500,
                        mimetype="application/fhir+json")

    request_guard.install(app, skip_prefixes=(*FHIR_PATHS, "/auth/"))
    home_routes(app, services)
    install_routes(app, services)
    app.wsgi_app = ProxyHeaders(app.wsgi_app,  # type: ignore[method-assign]
                                services.settings.trusted_proxies)
    return app


def create_edge_app(services: Services) -> EdgeApp:
    """What `refloop serve`'s web role runs: the Flask app behind the HTTP edge, with the
    routes wiring modules serve at the edge itself (`edge_routes(services)`, e.g. /hooks/)."""
    from refloop.edge.limits import EdgeLimits
    from refloop.edge.server import EdgeApp

    routes = [route for module in modules() if hasattr(module, "edge_routes")
              for route in module.edge_routes(services)]

    def keep(head: Head | None, body: bytes, reason: str) -> None:
        target = head.raw_path + (b"?" + head.query if head and head.query else b"") \
            if head else b""
        keep_request(services, head.method if head else "", target.decode("latin-1"), body,
                     reason, head.headers.get("content-type", "") if head else "")

    return EdgeApp(create_app(services), routes, EdgeLimits.from_settings(services.settings),
                   keep, SECURITY_HEADERS)


def keep_request(services: Services, method: str, target: str, body: bytes, reason: str,
                 content_type: str = "") -> None:
    """Quarantine a request that failed unexpectedly: its request line (secret query
    parameters masked) and body."""
    line = f"{method} {redact_text(target)}\n".encode("latin-1", "replace")
    try:
        services.quarantine.put(origin="http", kind=FAILED_REQUEST, reason=reason,
                                original=line + body, content_type=content_type[:128])
    except Exception:
        log.error("http: could not quarantine a failed request", extra={"why": reason})


#: paths whose clients read FHIR: their 4xx answers are OperationOutcomes, not HTML pages
FHIR_PATHS = ("/fhir", "/hooks")
_ISSUE_CODES = {404: "not-found", 405: "not-supported", 413: "too-costly", 415: "not-supported"}


def _client_error(exc: HTTPException) -> Any:
    """A 4xx under a FHIR path as an OperationOutcome, with the error's headers (Allow)."""
    code = exc.code or 500
    if not 400 <= code < 500:
        return exc
    text = str(exc.description) if code == 413 else f"{exc.name} ({request.method})"
    body = {"resourceType": "OperationOutcome", "issue": [{
        "severity": "error", "code": _ISSUE_CODES.get(code, "invalid"), "diagnostics": text}]}
    headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
    return Response(json.dumps(body), status=code, headers=headers,
                    mimetype="application/fhir+json")


def internal_error(correlation: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [{
        "severity": "error", "code": "exception",
        "diagnostics": f"internal error; correlation id {correlation} (the request is kept; "
                       "the server logged the cause)"}]}
