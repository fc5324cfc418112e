"""Browser-facing protections: the session cookie (Secure; HttpOnly; SameSite=None;
Partitioned), response headers (CSP frame-ancestors for the tenant's EHR origins, no XFO,
no-store, referrer only to ourselves) and the CSRF check (synchronizer token plus Origin)
for every action."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Request
from werkzeug.wrappers import Response

from smart_app.tokens import same


def set_browser_cookie(response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/smart", secure=True, httponly=True,
                        samesite="None", partitioned=True)


def apply_headers(response: Response, frame_origins: tuple[str, ...],
                  form_targets: tuple[str, ...] = ()) -> None:
    ancestors = " ".join(frame_origins) or "'none'"
    forms = " ".join(("'self'", *form_targets))
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'self'; img-src 'self' data:; "
        f"form-action {forms}; frame-ancestors {ancestors}; base-uri 'none'")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers.pop("X-Frame-Options", None)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def csrf_problem(request: Request, *, expected_token: str, own_origin: str) -> str | None:
    """Why this POST is refused, or None. SameSite=None leaves CSRF to us: the form's token
    must match the session's, and the request must come from our own origin."""
    sent = request.form.get("csrf_token", "")
    if not sent or not same(sent, expected_token):
        return "the form's security token is missing or stale; reload the page and try again"
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site and fetch_site not in ("same-origin", "none"):
        return "the request did not come from this app's own pages"
    origin = request.headers.get("Origin") or (
        origin_of(request.headers["Referer"]) if request.headers.get("Referer") else "")
    if not origin or origin != own_origin:
        return "the request did not come from this app's own pages"
    return None
