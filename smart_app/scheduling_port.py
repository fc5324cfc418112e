"""The scheduling sections of the referral page and booking on the patient's behalf.

The data comes from the scheduling adapter through plain callables that refloop/wiring puts on
`SmartRuntime.scheduling` (this app never imports that adapter):

    summary(referral_id) -> dict          appointment, history, reminders, answers, links
    find_slots(referral_id, after) -> dict  {"ok", "message", "slots": [...], "after"}
    book(referral_id, key, actor_reference, actor_display) -> dict  {"ok", "taken", "message"}
    send_link(referral_id) -> dict        revoke the patient's links and send a new one
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, abort, redirect, render_template, request

from referrals.errors import NotFound
from smart_app import audit, reach
from smart_app.runtime import SmartRuntime
from smart_app.security import csrf_problem, origin_of
from smart_app.sessions import Session

log = logging.getLogger("refloop.smart.scheduling")


def scheduling_routes(bp: Blueprint, rt: SmartRuntime,
                      with_session: Callable[..., Any], base_url: Callable[[], str]) -> None:
    @bp.get("/s/<sid>/referrals/<rid>/slots")
    @with_session
    def slots(session: Session, rid: str) -> Any:
        if rt.scheduling is None:
            abort(404)
        try:
            referral = reach.checked(rt, session, rid)
        except NotFound:
            abort(404)
        found = rt.scheduling.find_slots(rid, request.args.get("after", "")[:64])
        audit.record(rt.resources, audit.build_audit_event(
            session, interaction="read", patient=referral.patient,
            entities=[f"Task/{referral.id}"], client_id=_client_id(rt, session)))
        html = render_template("smart/scheduling_slots.html", s=session, ctx=session.context,
                               r=referral, found=found, error=request.args.get("error", ""),
                               base=f"/smart/s/{session.id}")
        return Response(html)

    @bp.post("/s/<sid>/referrals/<rid>/book")
    @with_session
    def book(session: Session, rid: str) -> Any:
        problem = _refused(session, rid)
        if problem is not None:
            return problem
        result = rt.scheduling.book(rid, request.form.get("slot", "")[:512],
                                    session.context.user, session.context.user_display)
        if not result["ok"]:
            return redirect(f"{base_url()}/smart/s/{session.id}/referrals/{rid}/slots?"
                            f"error={'taken' if result['taken'] else 'failed'}", code=303)
        return redirect(f"{base_url()}/smart/s/{session.id}/referrals/{rid}?done=schedule",
                        code=303)

    @bp.post("/s/<sid>/referrals/<rid>/scheduling-link")
    @with_session
    def send_link(session: Session, rid: str) -> Any:
        problem = _refused(session, rid)
        if problem is not None:
            return problem
        result = rt.scheduling.send_link(rid)
        log.info("scheduling link sent by coordinator", extra={"referral_id": rid,
                                                              "ok": result["ok"]})
        return redirect(f"{base_url()}/smart/s/{session.id}/referrals/{rid}", code=303)

    def _refused(session: Session, rid: str) -> Response | None:
        """A CSRF problem (403), or None; OutsideReach (403) or 404 for a referral this launch
        may not act on or that does not exist."""
        if rt.scheduling is None:
            abort(404)
        problem = csrf_problem(request, expected_token=session.csrf_token,
                               own_origin=origin_of(base_url()))
        if problem:
            return Response(problem, status=403)
        try:
            reach.checked(rt, session, rid)
        except NotFound:
            abort(404)
        return None


def _client_id(rt: SmartRuntime, session: Session) -> str:
    tenant = rt.config.tenant(session.tenant)
    return tenant.client_id if tenant else session.tenant
