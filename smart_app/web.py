"""The SMART app's Flask blueprint: launch, callback, JWKS, and the session-bound pages."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, abort, g, redirect, render_template, request
from werkzeug.wrappers import Response as WResponse

from referrals.errors import ConflictError, IllegalTransition, NotFound, PeerError
from smart_app import audit, pages, task_views
from smart_app.analytics_port import analytics_routes
from smart_app.auth import LaunchError, public_jwks
from smart_app.reach import OutsideReach
from smart_app.runtime import SmartRuntime
from smart_app.scheduling_port import scheduling_routes
from smart_app.security import apply_headers, csrf_problem, origin_of, set_browser_cookie
from smart_app.sessions import Session, TooManyLaunches
from smart_app.tokens import new_secret

log = logging.getLogger("refloop.smart")


def smart_blueprint(rt: SmartRuntime) -> Blueprint:
    bp = Blueprint("smart", __name__, url_prefix="/smart", template_folder="templates",
                   static_folder="static", static_url_path="/static")

    def base_url() -> str:
        """Our public URL, from the configuration only: a request's Host header never decides
        a redirect URI or an origin."""
        return rt.public_base_url

    @bp.after_request
    def _headers(response: Response) -> Response:
        tenant = rt.config.tenant(g.get("smart_tenant", "")) if g.get("smart_tenant") else None
        origins = tenant.ehr_origins if tenant else rt.config.all_ehr_origins
        apply_headers(response, origins, tuple(g.get("smart_form_targets", ())))
        return response

    @bp.errorhandler(OutsideReach)
    def _outside_reach(exc: OutsideReach) -> Response:
        return _refused(rt, exc)

    launch_routes(bp, rt, base_url)
    with_session = session_guard(rt)
    page_routes(bp, rt, with_session)
    action_routes(bp, rt, with_session, base_url)
    scheduling_routes(bp, rt, with_session, base_url)
    analytics_routes(bp, rt, with_session)
    return bp


def launch_routes(bp: Blueprint, rt: SmartRuntime, base_url: Callable[[], str]) -> None:
    """The launch, the EHR's callback with the code, and our public keys."""
    cookie = rt.config.cookie_name
    cookie_age = int(rt.config.session_absolute_hours * 3600)

    @bp.get("/launch")
    def launch() -> Any:
        iss, handle = request.args.get("iss", ""), request.args.get("launch") or None
        if not iss:
            return _message("Launch Refloop from the EHR", "The launch request has no 'iss' "
                            "(the EHR's FHIR address). Open Refloop from the EHR.", 400)
        browser = request.cookies.get(cookie) or new_secret()
        try:
            authorize = rt.launcher.start(browser, iss=iss, launch=handle,
                                          redirect_uri=base_url() + "/smart/callback",
                                          source=request.remote_addr or "")
        except LaunchError as exc:
            return _message("Refloop cannot start", str(exc), 400)
        except TooManyLaunches as exc:
            log.warning("launch refused: too many pending", extra={"outcome": "launch-limit"})
            busy = _message("Refloop is busy", str(exc), 429)
            busy.headers["Retry-After"] = str(exc.retry_after)
            return busy
        except PeerError as exc:
            return _message("The EHR cannot be reached", f"{exc}. Try again in a moment.", 502)
        if authorize.method == "POST":
            g.smart_form_targets = (origin_of(authorize.url),)
            page = render_template("smart/launch_post.html", target=authorize.url,
                                   form=authorize.form)
            response: WResponse = Response(page)
        else:
            response = redirect(authorize.url, code=302)
        set_browser_cookie(response, cookie, browser, cookie_age)
        return response

    @bp.get("/callback")
    def callback() -> Any:
        state, code = request.args.get("state", ""), request.args.get("code", "")
        browser = request.cookies.get(cookie)
        if request.args.get("error"):
            if state:
                rt.sessions.consume_state(state, browser)
            return _message("The EHR did not authorize Refloop",
                            f"{request.args['error']}: "
                            f"{request.args.get('error_description', '')[:300]}", 400)
        if not state or not code:
            return _message("Launch Refloop from the EHR", "This address is only reached during "
                            "a launch, with the EHR's code and state. Relaunch from the EHR.", 400)
        try:
            session = rt.launcher.finish(browser, state=state, code=code)
        except LaunchError as exc:
            return _message("Refloop cannot start", str(exc), 400)
        except PeerError as exc:
            return _message("The EHR refused the launch", f"{exc}.", 502, setup_hint=True)
        fresh = new_secret()
        rt.sessions.rotate_browser(browser or "", fresh)
        response = redirect(pages.landing_url(rt, session), code=303)
        set_browser_cookie(response, cookie, fresh, cookie_age)
        return response

    @bp.get("/jwks.json")
    def jwks() -> Any:
        response = Response(_json(public_jwks(rt.config.tenants)), mimetype="application/json")
        response.headers["Cache-Control"] = "max-age=300"
        return response


def session_guard(rt: SmartRuntime) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A view decorator: the session named in the URL, bound to this browser's cookie, with
    a fresh EHR token; the "session has ended" page otherwise."""
    cookie = rt.config.cookie_name

    def with_session(view: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(sid: str, **kwargs: Any) -> Any:
            found = rt.sessions.get(sid, request.cookies.get(cookie))
            session = rt.launcher.fresh(found) if found else None
            if session is None:
                return _message("Your Refloop session has ended", "Sessions end after "
                                f"{rt.config.session_idle_minutes:.0f} minutes without use, or "
                                "when the EHR ends your access. Relaunch Refloop from the EHR "
                                "(no separate login is needed).", 401, relaunch=True)
            g.smart_tenant, g.smart_session = session.tenant, session
            return view(session, **kwargs)
        wrapped.__name__ = view.__name__
        return wrapped
    return with_session


def page_routes(bp: Blueprint, rt: SmartRuntime,
                with_session: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """The pages read in a session: the worklist, the dashboard, a referral."""
    @bp.get("/s/<sid>/")
    @with_session
    def worklist(session: Session) -> Any:
        return pages.worklist(rt, session, request.args)

    @bp.get("/s/<sid>/dashboard")
    @with_session
    def dashboard(session: Session) -> Any:
        return pages.dashboard(rt, session)

    @bp.get("/s/<sid>/referrals/<rid>")
    @with_session
    def referral(session: Session, rid: str) -> Any:
        try:
            done = request.args.get("done", "")
            return pages.referral(rt, session, rid, done=done,
                                  notice="task outcome recorded" if done == "task-outcome"
                                  else "")
        except NotFound:
            abort(404)


def action_routes(bp: Blueprint, rt: SmartRuntime,
                  with_session: Callable[[Callable[..., Any]], Callable[..., Any]],
                  base_url: Callable[[], str]) -> None:
    """What a person does on a referral page: a lifecycle action, a task's outcome (CSRF
    token and Origin checked first)."""
    @bp.post("/s/<sid>/referrals/<rid>/act")
    @with_session
    def act(session: Session, rid: str) -> Any:
        problem = csrf_problem(request, expected_token=session.csrf_token,
                               own_origin=origin_of(base_url()))
        if problem:
            log.warning("action refused", extra={"reason": "csrf", "referral_id": rid})
            return _message("Action refused", problem, 403)
        name = request.form.get("action", "")
        try:
            pages.act(rt, session, rid, name, request.form)
        except NotFound:
            abort(404)
        except (IllegalTransition, ConflictError) as exc:
            return pages.referral(rt, session, rid, error=_explain(exc), status=409)
        except pages.ActionError as exc:
            return pages.referral(rt, session, rid, error=str(exc), status=400)
        return redirect(f"{base_url()}/smart/s/{session.id}/referrals/{rid}?done={name}",
                        code=303)

    @bp.post("/s/<sid>/tasks/<tid>/outcome")
    @with_session
    def task_outcome(session: Session, tid: str) -> Any:
        problem = csrf_problem(request, expected_token=session.csrf_token,
                               own_origin=origin_of(base_url()))
        if problem:
            log.warning("task outcome refused", extra={"reason": "csrf", "task_id": tid})
            return _message("Action refused", problem, 403)
        try:
            task = task_views.record_outcome(rt, session, tid, request.form)
        except NotFound:
            abort(404)
        except task_views.TaskError as exc:
            rid = request.form.get("referral", "")
            if not rid:
                return _message("The outcome was not recorded", str(exc), 409)
            return pages.referral(rt, session, rid, error=f"The outcome was not recorded: {exc}",
                                  status=409)
        log.info("task outcome recorded", extra={"task_id": tid, "referral_id": task.referral_id,
                                                 "outcome": task.outcome})
        return redirect(f"{base_url()}/smart/s/{session.id}/referrals/{task.referral_id}"
                        f"?done=task-outcome", code=303)


def _refused(rt: SmartRuntime, exc: OutsideReach) -> Response:
    """A referral outside the launch's reach: a 403 page, and an AuditEvent with outcome 4."""
    session: Session = g.smart_session
    tenant = rt.config.tenant(session.tenant)
    audit.record(rt.resources, audit.build_audit_event(
        session, interaction="read" if request.method == "GET" else "update",
        patient=exc.referral.patient, entities=[f"Task/{exc.referral.id}"],
        client_id=tenant.client_id if tenant else session.tenant, outcome="4"))
    log.warning("referral refused: outside the launch's reach",
                extra={"referral_id": exc.referral.id, "tenant": session.tenant})
    return _message("This referral is not available", str(exc), 403)


def _explain(exc: Exception) -> str:
    if isinstance(exc, IllegalTransition):
        return f"This action is not possible now: {exc.why} (the referral is {exc.stage})."
    return "Someone else changed this referral while you were looking at it. " \
        "The page now shows the latest version; check it and try again."


def _message(title: str, text: str, status: int, *, relaunch: bool = False,
             setup_hint: bool = False) -> Response:
    html = render_template("smart/message.html", title=title, text=text, relaunch=relaunch,
                           setup_hint=setup_hint, now=datetime.now(UTC))
    return Response(html, status=status)


def _json(data: Any) -> str:
    return json.dumps(data)
