"""A request whose body was over the web server's limit (`http_max_body_bytes`), or was cut by
its request deadline (`http_request_timeout`) once its headers were in, as the edge hands it over:
with its first 64 KiB and the environ mark `OVERSIZED` (the limit) or `TIMED_OUT` (the deadline).

Nothing acts on such a request as if it were whole. Before any view runs, the area that serves the
path may answer it (registered here by the wiring: the provider's upload link keeps the part in
quarantine for the link's referral and shows its upload page); otherwise an oversized request is
a 413 in the path's format (an OperationOutcome under the FHIR paths, the area's page, the token
endpoint's OAuth error), and a late one the edge's 408 OperationOutcome, as before any area took
them; nothing is kept, since no one has said who sent it.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from refloop.edge.connection import INCOMPLETE
from refloop.edge.messages import outcome
from refloop.edge.wsgi import OVERSIZED, TIMED_OUT

#: the answer to an oversized or late request under a prefix: (its first part, the limit in
#: bytes or the deadline in seconds, "too-large" or "deadline") in, a response out, or None when
#: the area leaves this path to the 413 (the 408)
Refusal = Callable[[bytes, float, str], Response | None]
KEY = "refloop.oversized"


def register(app: Flask, prefix: str, refusal: Refusal) -> None:
    """`refusal` answers oversized requests under `prefix`."""
    app.extensions.setdefault(KEY, []).append((prefix.rstrip("/"), refusal))


def install(app: Flask) -> None:
    """Refuse oversized requests before any view (register it before other request hooks)."""
    @app.before_request
    def _refuse_oversized() -> Response | None:
        limit, problem = request.environ.get(OVERSIZED), "too-large"
        if limit is None:
            limit, problem = request.environ.get(TIMED_OUT), "deadline"
        if limit is None:
            return None
        path = request.path
        for prefix, refusal in app.extensions.get(KEY, []):
            if path == prefix or path.startswith(prefix + "/"):
                answer = refusal(request.get_data(), limit, problem)
                if answer is not None:
                    return answer
        if problem == "deadline":
            return _late()
        raise RequestEntityTooLarge(f"the body is larger than {limit} bytes")


def _late() -> Response:
    status, code, text = INCOMPLETE["deadline"]
    answer = outcome(status, code, text)
    return Response(answer.body, status=status, mimetype="application/fhir+json")
