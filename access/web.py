"""The authorization server's routes: the token endpoint and SMART discovery."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response

from access.discovery import TOKEN_PATH, smart_configuration
from access.server import TokenServer


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
