"""The authorization server's routes: the token endpoint and SMART discovery."""

from __future__ import annotations

import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from flask import Blueprint, Response

from access.discovery import TOKEN_PATH, smart_configuration
from access.server import TokenServer

#: what a client error at the token endpoint says (RFC 6749 5.2 error JSON, not an HTML page)
TOKEN_ERRORS = {
    405: "the token endpoint takes POST, with a form-encoded body (RFC 6749 3.2)",
    404: "no such endpoint; request tokens with POST /auth/token",
    413: "the request body is larger than the server accepts",
}


def token_error_page(status: int) -> Response:
    """The answer to a client error under the token endpoint that no view made (another
    method than POST, a longer path): `{"error": "invalid_request", ...}`, as OAuth clients
    read; the app adds the error's own headers (Allow)."""
    text = TOKEN_ERRORS.get(status) or HTTPStatus(status).phrase.lower()
    body = json.dumps({"error": "invalid_request", "error_description": text})
    return Response(body, status=status, mimetype="application/json",
                    headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def access_blueprint(server: TokenServer, base_url: str,
                     scopes: Callable[[], list[str]]) -> Blueprint:
    bp = Blueprint("access", __name__)

    @bp.post(TOKEN_PATH)
    def token() -> Any:
        return server.token_response()

    def discovery() -> Response:
        body = json.dumps(smart_configuration(base_url, scopes()))
        return Response(body, mimetype="application/json",
                        headers={"Cache-Control": "max-age=300"})

    bp.add_url_rule("/.well-known/smart-configuration", "smart_configuration", discovery)
    bp.add_url_rule("/fhir/.well-known/smart-configuration", "fhir_smart_configuration",
                    discovery)
    return bp
