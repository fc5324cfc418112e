"""What the Flask app refuses before any view runs, and how it answers a redirect.

- A NUL character in a query or form value: never data in anything Refloop reads (a filter,
  a reason, a Twilio field), and PostgreSQL's text columns cannot hold one, so a value that
  reached the store answered 500 there while SQLite kept it. Refused with 400 up front, the
  same on both databases. The FHIR paths and the token endpoint are left to their own checks,
  which answer in their own shapes (an OperationOutcome naming the parameter, an OAuth error).
- A redirect the router makes (a missing or doubled slash) carries a path-only Location: the
  URL werkzeug builds takes its host from the request's Host header, which the client chooses.
  Under a people-facing area with its own error page (patient and provider links, whose paths
  carry a token) the page answers 404 instead, as for any path it does not know.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from flask import Flask, Response, abort, request
from werkzeug.exceptions import NotFound
from werkzeug.routing import RequestRedirect

from refloop import error_pages

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def install(app: Flask, skip_prefixes: tuple[str, ...]) -> None:
    @app.before_request
    def _refuse_nul() -> None:
        if request.path.startswith(skip_prefixes):
            return
        if _has_nul(request.args.items(multi=True)) or (
                request.mimetype in FORM_TYPES and _form_has_nul()):
            abort(400, description="a parameter holds a NUL character; send it without one")

    @app.after_request
    def _own_redirects(response: Response) -> Response:
        """Flask hands the router's redirect to no error handler: it is replaced here."""
        if isinstance(request.routing_exception, RequestRedirect):
            return redirect(app, request.routing_exception)
        return response


def _form_has_nul() -> bool:
    """Read the body first (kept by werkzeug), so the form is parsed from that copy and a view
    that stores the raw body (the Twilio webhooks) still finds it whole."""
    request.get_data()
    return _has_nul(request.form.items(multi=True))


def _has_nul(items: Iterable[tuple[str, str]]) -> bool:
    return any("\x00" in key or "\x00" in value for key, value in items)


def redirect(app: Flask, exc: RequestRedirect) -> Response:
    """The router's redirect with a path-only Location, or the area's 404 page."""
    page = error_pages.page_for(app, request.path, NotFound())
    if page is not None:
        return page
    target = urlsplit(exc.new_url)
    location = target.path + (f"?{target.query}" if target.query else "")
    return Response(status=exc.code, headers={"Location": location})
