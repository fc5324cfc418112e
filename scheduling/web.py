"""The patient's pages (`/p/...`): server-rendered, mobile-first, English and Spanish, no
script and no third-party asset. The link's first page asks only for the date of birth; after
the check a short-lived session cookie (HttpOnly, Secure, SameSite=Strict, path /p) carries the
patient on, and every page shows that one referral only (no referral id is ever in a URL)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, g, redirect, render_template, request
from werkzeug.wrappers import Response as WResponse

from referrals.errors import PeerError
from referrals.lifecycle import TABLE
from referrals.model import Actor
from scheduling.adapter import SchedulingAdapter
from scheduling.booking import CannotBook, SlotPage
from scheduling.i18n import LANGUAGES, format_day, format_time, format_when, t
from scheduling.links import LinkState, PatientSession, same
from scheduling.patient import load_patient
from scheduling.preparation import AnswerError, questions, to_response

log = logging.getLogger("refloop.scheduling.web")

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat")
TIMES = ("morning", "afternoon")
#: a waitlist offer's id (uuid4 hex): routes and forms take exactly this
OFFER_ID = re.compile(r"[0-9a-f]{32}")


def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'")
    response.headers["Referrer-Policy"] = "same-origin"  # never sent to other sites
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    return response


def error_page(status: int) -> Response:
    """The page for a path under /p that no route answers (a trailing slash, a missing or extra
    segment): the invalid-link page in the browser's language, with the patient pages' headers;
    for a request over the web server's size limit (413), the too-much-to-send page."""
    lang = request.accept_languages.best_match(LANGUAGES) or "en"
    which = "too_large" if status == 413 else "invalid"
    html = render_template("scheduling/message.html", lang=lang,
                           t=lambda key, **kw: t(key, lang, **kw),
                           heading=t(f"{which}_heading", lang), text=t(f"{which}_text", lang))
    return _headers(Response(html, status=status))


def patient_blueprint(adapter: SchedulingAdapter) -> Blueprint:
    bp = Blueprint("scheduling_patient", __name__, url_prefix="/p",
                   template_folder="templates", static_folder="static",
                   static_url_path="/static")
    config = adapter.config
    links = adapter.links
    cookie_name = config.cookie_name
    own_origin = _origin(adapter.core.base_url)

    bp.after_request(_headers)

    def page(template: str, status: int = 200, **values: Any) -> Response:
        lang = g.get("lang", "en")
        html = render_template(f"scheduling/{template}", lang=lang,
                               t=lambda key, **kw: t(key, lang, **kw), **values)
        return Response(html, status=status)

    def message(heading: str, text: str, status: int, **values: Any) -> Response:
        return page("message.html", status, heading=heading, text=text, **values)

    def browser_language() -> str:
        chosen = request.args.get("lang", "")
        if chosen in LANGUAGES:
            return chosen
        return request.accept_languages.best_match(LANGUAGES) or "en"

    # -- the link and the date of birth ------------------------------------------------------

    @bp.get("/<token>", merge_slashes=False)  # /p//<token> is not redirected: 404
    def opened(token: str) -> Response:
        g.lang = browser_language()
        source = request.remote_addr or "unknown"
        if links.source_throttled(source):
            return message(t("invalid_heading", g.lang), t("throttled", g.lang), 429)
        link = links.try_get(token)
        if link is None:
            links.check(token, False, source)  # guessing tokens counts as wrong attempts
        state = link.state(datetime.now(UTC)) if link else LinkState.UNKNOWN
        if state != LinkState.VALID:
            return _refused(state)
        return page("dob.html", token=token, offer=_safe_id(request.args.get("offer")),
                    go=_go(request.args.get("go")), error="")

    @bp.post("/<token>", merge_slashes=False)
    def verify(token: str) -> WResponse:
        g.lang = request.form.get("lang") if request.form.get("lang") in LANGUAGES \
            else browser_language()
        source = request.remote_addr or "unknown"
        offer, go = _safe_id(request.form.get("offer")), _go(request.form.get("go"))
        if links.source_throttled(source):
            return message(t("invalid_heading", g.lang), t("throttled", g.lang), 429)
        link = links.try_get(token)
        if link is None or link.state(datetime.now(UTC)) != LinkState.VALID:
            if link is None:
                links.check(token, False, source)
            return _refused(link.state(datetime.now(UTC)) if link else LinkState.UNKNOWN)
        born = _date_of_birth(request.form)
        if born is None:
            return page("dob.html", 400, token=token, offer=offer, go=go,
                        error=t("dob_invalid", g.lang))
        referral = adapter.referral(link.referral_id)
        with adapter.core.db.read() as conn:
            patient = load_patient(conn, referral)
        matches = len(patient.birth_date) == 10 and born.isoformat() == patient.birth_date
        result = links.check(token, matches, source)
        if result.state == LinkState.LOCKED:
            log.warning("patient link locked", extra={"referral_id": link.referral_id})
            return _refused(LinkState.LOCKED)
        if not result.ok:
            return page("dob.html", 400, token=token, offer=offer, go=go,
                        error=t("dob_wrong", g.lang, left=str(result.attempts_left)))
        cookie = links.open_session(link, patient.language)
        target = f"/p/offer/{offer}" if offer else "/p/prepare" if go == "prepare" \
            else "/p/home"
        response = redirect(target, code=303)
        response.set_cookie(cookie_name, cookie, max_age=int(config.session_minutes * 60),
                            path="/p", secure=True, httponly=True, samesite="Strict")
        return response

    def _refused(state: LinkState) -> Response:
        if state == LinkState.LOCKED:
            return message(t("locked_heading", g.lang), t("locked_text", g.lang), 423)
        return message(t("invalid_heading", g.lang), t("invalid_text", g.lang), 404)

    # -- the session ---------------------------------------------------------------------------

    def with_session(view: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(**kwargs: Any) -> Any:
            session = links.session(request.cookies.get(cookie_name))
            if session is None:
                g.lang = browser_language()
                return message(t("session_heading", g.lang), t("session_text", g.lang), 401)
            g.lang = session.language
            if request.method == "POST" and not _csrf_ok(session):
                return message(t("session_heading", g.lang), t("session_text", g.lang), 403)
            return view(session, **kwargs)
        wrapped.__name__ = view.__name__
        return wrapped

    def _csrf_ok(session: PatientSession) -> bool:
        sent = request.form.get("csrf_token", "")
        if not sent or not same(sent, session.csrf_token):
            return False
        if request.headers.get("Sec-Fetch-Site") == "cross-site":
            return False
        # our public URL, never the Host header: behind a reverse proxy the Host is the
        # proxy's upstream address, not what the patient's browser sent as Origin
        origin = request.headers.get("Origin")
        return not origin or origin == own_origin

    def context(session: PatientSession) -> dict[str, Any]:
        referral = adapter.referral(session.referral_id)
        destination = adapter.booker.destination(referral)
        return {"s": session, "referral": referral, "destination": destination,
                "zone": destination.time_zone if destination else "UTC",
                "phone": destination.phone if destination else "",
                "what": referral.specialty or "specialist"}

    def when(moment: datetime, zone: str) -> str:
        return format_when(moment, zone, g.lang)

    @bp.get("/lang/<code>")
    @with_session
    def language(session: PatientSession, code: str) -> WResponse:
        if code in LANGUAGES:
            links.set_language(request.cookies.get(cookie_name, ""), code)
        return redirect("/p/home", code=303)

    @bp.get("/home")
    @with_session
    def home(session: PatientSession) -> Response:
        ctx = context(session)
        current = adapter.book.current(session.referral_id)
        if current is None:
            return slots_page(session, ctx, None)
        prep = _preparation(adapter, ctx)
        offer = adapter.waitlist.open_offer_for(session.referral_id)
        far = (current.start - datetime.now(UTC)).days >= config.waitlist_min_days
        return page("home.html", **ctx, a=current, when=when(current.start, current.time_zone),
                    booked=request.args.get("booked") == "1", prep=prep,
                    answered=_answered(ctx["referral"]), offer=offer,
                    offer_when=when(offer.start, ctx["zone"]) if offer else "",
                    waitlist_open=far and ctx["destination"] is not None
                    and ctx["destination"].source in ("fhir", "ihe"),
                    waiting=adapter.waitlist.waiting(session.referral_id))

    def slots_page(session: PatientSession, ctx: dict[str, Any], after: datetime | None,
                   *, taken: bool = False, status: int = 200,
                   found: SlotPage | None = None) -> Response:
        referral, destination = ctx["referral"], ctx["destination"]
        if destination is None or referral.stage not in TABLE["schedule"].sources:
            return message(t("title", g.lang), t("done_cannot", g.lang), 200, **ctx)
        if destination.source == "hl7v2":
            return page("prefs.html", **ctx, days=WEEKDAYS, times=TIMES, error="")
        try:
            result = found or adapter.booker.find(session.referral_id, after)
        except PeerError:
            return message(t("title", g.lang), t("no_slots", g.lang), 503, **ctx)
        days: dict[str, list[dict[str, Any]]] = {}
        for option in result.options:
            days.setdefault(format_day(option.start, ctx["zone"], g.lang), []).append({
                "key": option.key, "time": format_time(option.start, ctx["zone"], g.lang),
                "clinician": option.clinician, "location": option.location})
        return page("slots.html", status, **ctx, days=days, taken=taken,
                    later=result.after.isoformat() if result.after else "")

    @bp.get("/slots")
    @with_session
    def slots(session: PatientSession) -> Response:
        after = _instant(request.args.get("after", ""))
        return slots_page(session, context(session), after)

    @bp.post("/book")
    @with_session
    def book(session: PatientSession) -> Any:
        ctx = context(session)
        key = request.form.get("slot", "")[:512]
        actor = Actor(ctx["referral"].patient, "the patient (booking link)", "human")
        try:
            outcome = adapter.booker.book(session.referral_id, key, actor)
        except CannotBook:
            return message(t("title", g.lang), t("done_cannot", g.lang), 409, **ctx)
        except PeerError as exc:
            log.warning("booking failed", extra={"referral_id": session.referral_id,
                                                 "error": str(exc)})
            return message(t("title", g.lang), t("no_slots", g.lang), 503, **ctx)
        if outcome.taken:
            return slots_page(session, ctx, None, taken=True, status=409,
                              found=outcome.next_page)
        if outcome.handoff:
            return page("handoff.html", **ctx, url=outcome.handoff)
        return redirect("/p/home?booked=1", code=303)

    @bp.get("/appointment.ics")
    @with_session
    def calendar(session: PatientSession) -> Response:
        current = adapter.book.current(session.referral_id)
        if current is None:
            return message(t("title", g.lang), t("no_slots", g.lang), 404)
        body = adapter.follower.ics(current, adapter.referral(session.referral_id))
        return Response(body, mimetype="text/calendar", headers={
            "Content-Disposition": 'attachment; filename="appointment.ics"'})

    @bp.route("/cancel", methods=["GET", "POST"])
    @with_session
    def cancel(session: PatientSession) -> Any:
        ctx = context(session)
        current = adapter.book.current(session.referral_id)
        if current is None:
            return redirect("/p/home", code=303)
        if request.method == "GET":
            return page("cancel.html", **ctx, a=current,
                        when=when(current.start, current.time_zone))
        adapter.booker.cancel(session.referral_id, Actor(
            ctx["referral"].patient, "the patient (booking link)", "human"),
            "cancelled by the patient on the booking link")
        return message(t("cancelled_heading", g.lang), t("cancel_text", g.lang), 200,
                       action=("/p/home", t("book_again", g.lang)), **ctx)

    @bp.route("/prepare", methods=["GET", "POST"])
    @with_session
    def prepare(session: PatientSession) -> Any:
        ctx = context(session)
        prep = _preparation(adapter, ctx)
        if prep is None or prep.questionnaire is None:
            return redirect("/p/home", code=303)
        asked = questions(prep.questionnaire, g.lang)
        error = ""
        if request.method == "POST":
            try:
                answers = to_response(prep.questionnaire, asked, request.form,
                                      subject=ctx["referral"].patient,
                                      based_on=ctx["referral"].service_request,
                                      language=g.lang)
            except AnswerError as exc:
                error = t("missing_answer", g.lang, what=exc.question.text)
            else:
                adapter.save_answers(session.referral_id, answers)
                return message(t("prepare_heading", g.lang), t("prepare_done", g.lang), 200,
                               action=("/p/home", t("continue", g.lang)), **ctx)
        return page("prepare.html", 400 if error else 200, **ctx, questions=asked,
                    instructions=prep.instructions_for(g.lang), error=error,
                    form=request.form)

    @bp.post("/waitlist")
    @with_session
    def waitlist(session: PatientSession) -> WResponse:
        ctx = context(session)
        current = adapter.book.current(session.referral_id)
        if request.form.get("join") == "1" and current is not None and ctx["destination"]:
            adapter.waitlist.join(session.referral_id, ctx["destination"].name, current.id,
                                  current.start)
        else:
            adapter.waitlist.leave(session.referral_id)
        return redirect("/p/home", code=303)

    @bp.route("/offer/<offer_id>", methods=["GET", "POST"])
    @with_session
    def offer(session: PatientSession, offer_id: str) -> Any:
        ctx = context(session)
        found = adapter.waitlist.try_get(offer_id, session.referral_id) \
            if _safe_id(offer_id) else None
        if found is None or found.status != "offered" or \
                found.expires_at <= datetime.now(UTC):
            return message(t("offer_heading", g.lang), t("offer_gone", g.lang), 404,
                           action=("/p/home", t("continue", g.lang)), **ctx)
        if request.method == "GET":
            return page("offer.html", **ctx, offer=found, when=when(found.start, ctx["zone"]))
        actor = Actor(ctx["referral"].patient, "the patient (waitlist offer)", "human")
        if adapter.take_offer(session.referral_id, found.id, actor):
            return redirect("/p/home?booked=1", code=303)
        return message(t("offer_heading", g.lang), t("offer_gone", g.lang), 409,
                       action=("/p/home", t("continue", g.lang)), **ctx)

    @bp.post("/request")
    @with_session
    def preferences(session: PatientSession) -> Any:
        ctx = context(session)
        days = [d for d in request.form.getlist("day") if d in WEEKDAYS]
        times = [x for x in request.form.getlist("time") if x in TIMES]
        earliest = request.form.get("earliest", "")
        if not days or not times:
            return page("prefs.html", 400, **ctx, days=WEEKDAYS, times=TIMES,
                        error=t("prefs_pick", g.lang))
        chosen = {"days": days, "times": times,
                  "earliest": earliest if _iso_date(earliest) else ""}
        actor = Actor(ctx["referral"].patient, "the patient (booking link)", "human")
        try:
            adapter.booker.request_by_preferences(session.referral_id, chosen, actor)
        except CannotBook:
            return message(t("title", g.lang), t("done_cannot", g.lang), 409, **ctx)
        return message(t("prefs_heading", g.lang), t("prefs_sent", g.lang), 200, **ctx)

    @bp.post("/close")
    @with_session
    def close(session: PatientSession) -> Response:
        links.close_session(request.cookies.get(cookie_name))
        response = message(t("title", g.lang), t("closed", g.lang), 200)
        response.delete_cookie(cookie_name, path="/p", secure=True, httponly=True,
                               samesite="Strict")
        return response

    return bp


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _preparation(adapter: SchedulingAdapter, ctx: dict[str, Any]) -> Any:
    destination = ctx["destination"]
    if destination is None or not destination.preparation:
        return None
    return adapter.config.preparations.get(destination.preparation)


def _answered(referral: Any) -> bool:
    return any(link.type == "QuestionnaireResponse" for link in referral.outputs)


def _date_of_birth(form: Any) -> date | None:
    try:
        year, month, day = (int(str(form.get(k, "")).strip()) for k in ("year", "month", "day"))
        if year < 1880:
            return None
        return date(year, month, day)
    except (ValueError, OverflowError):  # a 12-digit year: not a date
        return None


def _instant(value: str) -> datetime | None:
    try:  # an unencoded "+" of the offset arrives as a space
        moment = datetime.fromisoformat(value.strip().replace(" ", "+"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iso_date(value: str) -> bool:
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _safe_id(value: str | None) -> str:
    """An offer id exactly as we make them (32 lower-case hex digits), else ""."""
    text = value or ""
    return text if OFFER_ID.fullmatch(text) else ""


def _go(value: str | None) -> str:
    return "prepare" if value == "prepare" else ""
