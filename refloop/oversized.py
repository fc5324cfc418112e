"""A request whose body was over the web server's limit (`http_max_body_bytes`), as the edge
hands it over: with its first 64 KiB and the environ mark `OVERSIZED` (the limit).

Nothing acts on such a request as if it were whole. Before any view runs, the area that serves the
path may answer it (registered here by the wiring: the provider's upload link keeps the part in
quarantine for the link's referral and shows its upload page); otherwise the answer is a 413 in
the path's format (an OperationOutcome under the FHIR paths, the area's page, the token
endpoint's OAuth error), and nothing is kept, since no one has said who sent it.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from refloop.edge.wsgi import OVERSIZED

#: the answer to an oversized request under a prefix: (its first part, the limit) in, a
#: response out, or None when the area leaves this path to the 413
Refusal = Callable[[bytes, int], Response | None]
KEY = "refloop.oversized"


def register(app: Flask, prefix: str, refusal: Refusal) -> None:
    """`refusal` answers oversized requests under `prefix`."""
    app.extensions.setdefault(KEY, []).append((prefix.rstrip("/"), refusal))


def install(app: Flask) -> None:
    """Refuse oversized requests before any view (register it before other request hooks)."""
    @app.before_request
    def _refuse_oversized() -> Response | None:
        limit = request.environ.get(OVERSIZED)
        if limit is None:
            return None
        path = request.path
        for prefix, refusal in app.extensions.get(KEY, []):
            if path == prefix or path.startswith(prefix + "/"):
                answer = refusal(request.get_data(), int(limit))
                if answer is not None:
                    return answer
        raise RequestEntityTooLarge(f"the body is larger than {limit} bytes")
