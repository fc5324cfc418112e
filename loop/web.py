"""The providers' pages (`/loop/...`), server-rendered, no script, no third-party asset:

- `/loop/u/<token>`: a specialist's office uploads the consult note (PDF) for one referral; the
  page shows only what identifies the visit (our reference, the visit date, the patient's
  initials and birth year). One upload per link.
- `/loop/n/<token>`: a referring practice reads the consult note: the patient's date of birth
  first, then a short session (cookie HttpOnly, Secure, SameSite=Strict, path /loop/n) shows the
  note; downloading it is the receipt.

Tokens are only ever in the link itself (stored hashed); wrong tokens and wrong dates count
against the client address (429 when throttled) and a note link locks after
`[loop] link_attempts` wrong dates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date
from typing import Any

from flask import Blueprint, Response, redirect, render_template, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Response as WResponse

from loop import documents
from loop.links import LOCKED, NOTE, UPLOAD, VALID, Link, same
from loop.portal import Portal, PortalError

log = logging.getLogger("refloop.loop.web")

SECURITY = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}
REFUSED = {
    "unknown": ("This link does not work", "Check that you copied the whole link from the "
                "mail, or ask the referral team for a new one.", 404),
    "expired": ("This link has expired", "Ask the referral team for a new link.", 410),
    "revoked": ("This link was withdrawn", "Ask the referral team for a new link.", 410),
    "locked": ("This link is locked", "The date of birth was wrong too many times. Ask the "
               "referral team for a new link.", 423),
    "used": ("The consult note was already uploaded", "Thank you: we have it. If it was the "
             "wrong document, call the referral team.", 410),
    "too-large": ("The request was too large", "Nothing was sent. Go back and try again; to "
                  "send a large document, call the referral team.", 413),
}
#: the upload view's endpoint (an oversized upload is answered before the view runs)
UPLOAD_ENDPOINT = "loop_pages.upload"


def error_page(status: int) -> Response:
    """The page for a path under /loop that no route answers (a trailing slash, a missing or
    extra segment): the unknown-link page, with the providers' pages' headers; for a request
    over the web server's size limit, the too-large page."""
    heading, text, _status = REFUSED["too-large" if status == 413 else "unknown"]
    html = render_template("loop/message.html", heading=heading, text=text)
    return Response(html, status=status, headers=SECURITY)


def oversized_upload(portal: Portal) -> Callable[[bytes, float, str], Response | None]:
    """The answer to an upload over the web server's body limit, or cut by its request deadline
    (only its first part was read): on a valid upload link, that part is kept for the link's
    referral and the upload page says how large a file may be, or that it did not arrive in
    time; a bad link gets its page, and nothing is kept. None for the other paths under /loop
    (the too-large page; a late request: the server's 408)."""
    def answer(first: bytes, limit: float, problem: str) -> Response | None:
        if request.endpoint != UPLOAD_ENDPOINT or not request.view_args:
            return None
        token = str(request.view_args["token"])
        link, refusal = _opened(portal, token, UPLOAD)
        if link is None:
            return refusal
        error = portal.refuse_late(link, first, limit) if problem == "deadline" else \
            portal.refuse_oversized(link, first, int(limit))
        return _upload_page(portal, link, token, str(error), error.status)
    return answer


def loop_blueprint(portal: Portal) -> Blueprint:
    bp = Blueprint("loop_pages", __name__, url_prefix="/loop",
                   template_folder="templates", static_folder="static",
                   static_url_path="/static")
    links = portal.links
    cookie = portal.config.cookie_name

    @bp.after_request
    def _headers(response: Response) -> Response:
        response.headers.update(SECURITY)
        return response

    page, message, refused = _page, _message, _refused

    def opened(token: str, purpose: str) -> tuple[Link | None, Response | None]:
        return _opened(portal, token, purpose)

    # -- the specialist's upload ------------------------------------------------------------

    @bp.get("/u/<token>", merge_slashes=False)
    def upload_form(token: str) -> Response:
        link, answer = opened(token, UPLOAD)
        if link is None:
            assert answer is not None
            return answer
        return page("upload.html", token=token, visit=portal.visit_facts(link), error="",
                    limit_mb=documents.megabytes(portal.config.max_upload_bytes))

    @bp.post("/u/<token>", merge_slashes=False)
    def upload(token: str) -> Response:
        link, answer = opened(token, UPLOAD)
        if link is None:
            assert answer is not None
            return answer
        limit = portal.config.max_upload_bytes + 1
        raw = request.get_data(cache=True)  # the form parses this copy; kept whole if unread
        try:
            parts = [(f.filename or "", f.stream.read(limit))
                     for _, f in request.files.items(multi=True)]
            unnamed = any(request.form.values())  # a part without a filename is a field
        except RequestEntityTooLarge:  # such a field over the form's memory limit
            parts, unnamed = [], True
        sent = [(name, content) for name, content in parts if name or content]  # not empty inputs
        try:
            if unnamed or (not parts and raw.strip()):  # a field, or framing nobody read
                raise portal.refuse_unread(link, raw, request.content_type or "")
            if len(sent) > 1:
                raise portal.refuse_several(link, [content for _, content in sent])
            name, content = sent[0] if sent else ("", b"")
            done = portal.accept_upload(link, content, name)
        except PortalError as exc:
            return _upload_page(portal, link, token, str(exc), exc.status)
        return page("uploaded.html", visit=portal.visit_facts(link), done=done)

    # -- the referrer's note ----------------------------------------------------------------

    @bp.get("/n/<token>", merge_slashes=False)
    def note_dob(token: str) -> Response:
        link, answer = opened(token, NOTE)
        if link is None:
            assert answer is not None
            return answer
        return page("dob.html", token=token, error="")

    @bp.post("/n/<token>", merge_slashes=False)
    def note_verify(token: str) -> WResponse:
        link, answer = opened(token, NOTE)
        if link is None:
            assert answer is not None
            return answer
        born = _date_of_birth(request.form)
        if born is None:
            return page("dob.html", 400, token=token,
                        error="Enter the date of birth as numbers, for example 23 4 1961.")
        now, source = portal.now(), request.remote_addr or "unknown"
        matches = portal.birth_date(link) == born.isoformat()
        state = links.check_birth_date(link, matches, source, now)
        if state == LOCKED:
            log.warning("note link locked", extra={"referral_id": link.referral_id})
            return refused(LOCKED)
        if state != VALID:
            return refused(state)
        if not matches:
            left = links.attempts_left(link.id)
            return page("dob.html", 400, token=token,
                        error=f"That date of birth does not match. {left} "
                              f"attempt{'s' if left != 1 else ''} left.")
        secret = links.open_session(link, now)
        response = redirect("/loop/n/note", code=303)
        response.set_cookie(cookie, secret, max_age=int(portal.config.session_minutes * 60),
                            path="/loop/n", secure=True, httponly=True, samesite="Strict")
        return response

    def with_session(view: Callable[[Any], WResponse]) -> WResponse:
        session = links.session(request.cookies.get(cookie), portal.now())
        if session is None:
            return message("Your session has ended", "Open the link from the mail again.",
                           401)
        return view(session)

    @bp.get("/n/note")
    def note_page() -> WResponse:
        return with_session(lambda s: page("note.html", note=portal.note_facts(s.link),
                                           csrf=s.csrf_token))

    @bp.get("/n/note/file")
    def note_file() -> WResponse:
        def download(session: Any) -> WResponse:
            content_type, content, name = portal.read_note(session.link)
            response = Response(content, mimetype=content_type.split(";")[0])
            response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
            return response
        return with_session(download)

    @bp.post("/n/close")
    def close() -> WResponse:
        session = links.session(request.cookies.get(cookie), portal.now())
        if session is not None and same(request.form.get("csrf_token", ""),
                                        session.csrf_token):
            links.close_session(request.cookies.get(cookie))
        response = message("Signed out", "You can close this page.", 200)
        response.delete_cookie(cookie, path="/loop/n", secure=True, httponly=True,
                               samesite="Strict")
        return response

    return bp


def _page(template: str, status: int = 200, **values: Any) -> Response:
    return Response(render_template(f"loop/{template}", **values), status=status)


def _message(heading: str, text: str, status: int) -> Response:
    return _page("message.html", status, heading=heading, text=text)


def _refused(state: str) -> Response:
    heading, text, status = REFUSED[state]
    return _message(heading, text, status)


def _opened(portal: Portal, token: str, purpose: str) -> tuple[Link | None, Response | None]:
    """The link of `token`, or the page that says why not (and counts the miss)."""
    links = portal.links
    now, source = portal.now(), request.remote_addr or "unknown"
    if links.throttled(source, now):
        return None, _message("Too many attempts", "Wait an hour, then open the link from the "
                              "mail again.", 429)
    link = links.try_get(token, purpose)
    if link is None:
        links.fail_source(source, now)
        return None, _refused("unknown")
    state = link.state(now)
    return (link, None) if state == VALID else (None, _refused(state))


def _upload_page(portal: Portal, link: Link, token: str, error: str, status: int) -> Response:
    return _page("upload.html", status, token=token, visit=portal.visit_facts(link), error=error,
                 limit_mb=documents.megabytes(portal.config.max_upload_bytes))


def _date_of_birth(form: Any) -> date | None:
    try:
        return date(int(form.get("year", "")), int(form.get("month", "")),
                    int(form.get("day", "")))
    except (TypeError, ValueError, OverflowError):  # a 12-digit year: not a date
        return None
