"""The page people see for a client error (404, 405...) under a people-facing path.

Flask's blueprints cannot answer a path that matches none of their routes (a trailing slash, a
missing segment): routing fails before any blueprint is chosen, and the framework's own page
went out, without the area's headers. The wiring registers each people-facing area's page here
(`/p` for patients, `/loop` for providers, `/outreach/unsubscribe`); the app's error handler
asks for it. Nothing redirects: such a URL may carry a link token.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

#: a page for a client error: the status code in, the response (with its headers) out
Page = Callable[[int], Response]
KEY = "refloop.error_pages"


def register(app: Flask, prefix: str, page: Page) -> None:
    """`page` answers client errors under `prefix` (the path itself or below it)."""
    app.extensions.setdefault(KEY, []).append((prefix.rstrip("/"), page))


def page_for(app: Flask, path: str, exc: HTTPException) -> Response | None:
    """The registered page for `exc` at `path`, with the error's own headers (Allow), or None."""
    code = exc.code or 500
    if not 400 <= code < 500:
        return None
    for prefix, page in app.extensions.get(KEY, []):
        if path == prefix or path.startswith(prefix + "/"):
            response = page(code)
            for name, value in exc.get_headers():
                if name.lower() != "content-type":
                    response.headers[name] = value
            return response
    return None
