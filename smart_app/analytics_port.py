"""The outcomes dashboard (the Dashboard page when analytics is wired), its CSV, and the lists of
referrals behind each number.

The figures come from the analytics adapter through plain callables that refloop/wiring puts on
`SmartRuntime.analytics` (this app never imports that adapter); each raises ValueError for a
query string it cannot read:

    view(args, sources) -> dict       filters, headline rates, funnel, distributions, cohorts,
                                      breakdown
    csv(args, sources) -> str         the view as CSV
    referrals(args, sources) -> dict  {"title", "rows": [...], "patients": [...], "next", "back"}

`sources` is the launch's tenant's referral sources (None: every referral; smart_app/reach.py):
a launch counts and lists its own organisation's referrals only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from flask import Blueprint, Response, abort, render_template, request

from referrals.store.schema import resources
from smart_app import audit
from smart_app.patient_label import display_name
from smart_app.reach import reach_of, unmatched_sources
from smart_app.runtime import SmartRuntime
from smart_app.sessions import Session

log = logging.getLogger("refloop.smart.analytics")


def query_args() -> dict[str, str]:
    """The query string, one value per name; a name given twice (`?payer=A&payer=B`) is
    refused rather than one of its values silently kept (ValueError naming it)."""
    for name, values in request.args.lists():
        if len(values) > 1:
            raise ValueError(f"'{name[:64]}' is given {len(values)} times: give each filter "
                             "once")
    return request.args.to_dict()


def refused_for_patient(session: Session) -> Response | None:
    """The outcomes sum many patients' referrals: a launch the EHR limited to one patient (no
    user/ scope for referrals granted) gets a 403 page, not the figures."""
    if not session.context.patient_limited:
        return None
    html = render_template("smart/message.html", title="The dashboard is not available",
                           text="The outcomes count many patients' referrals, and the EHR "
                           "granted this launch access to one patient only. Ask your EHR "
                           "administrator for user-level access to open the dashboard.",
                           relaunch=False, setup_hint=False, now=datetime.now(UTC))
    return Response(html, status=403)


def outcomes_page(rt: SmartRuntime, session: Session) -> Response:
    sources = reach_of(rt.config, session).sources
    notice = unmatched_sources(rt, session)
    try:
        data = rt.analytics.view(query_args(), sources)
    except ValueError as exc:
        data = rt.analytics.view({}, sources)
        return _render(session, "smart/outcomes.html", d=data, error=str(exc), status=400,
                       names=_referrer_names(rt, data), sources_notice=notice)
    return _render(session, "smart/outcomes.html", d=data, error="",
                   names=_referrer_names(rt, data), sources_notice=notice)


def _referrer_names(rt: SmartRuntime, data: dict[str, Any]) -> dict[str, str]:
    """A name for each referrer in the breakdown, from its stored Practitioner or
    PractitionerRole; a reference with no stored copy, or copies on several servers that name
    different people, is left out (the page shows the reference)."""
    breakdown = data.get("breakdown") or {}
    if breakdown.get("dim") != "referrer":
        return {}
    wanted: dict[str, set[str]] = {}
    for row in breakdown.get("rows") or []:
        rtype, _, rid = str(row.get("value") or "").partition("/")
        if rtype in ("Practitioner", "PractitionerRole") and rid:
            wanted.setdefault(rtype, set()).add(rid)
    found: dict[str, set[str]] = {}
    with rt.db.read() as conn:
        for rtype, ids in wanted.items():
            for rid, body in conn.execute(
                    sa.select(resources.c.resource_id, resources.c.body).where(
                        resources.c.resource_type == rtype, resources.c.resource_id.in_(ids),
                        resources.c.deleted.is_(False))):
                name = display_name(body)
                if name:
                    found.setdefault(f"{rtype}/{rid}", set()).add(name)
    return {ref: names.pop() for ref, names in found.items() if len(names) == 1}


def analytics_routes(bp: Blueprint, rt: SmartRuntime,
                     with_session: Callable[..., Any]) -> None:
    @bp.get("/s/<sid>/dashboard.csv")
    @with_session
    def outcomes_csv(session: Session) -> Any:
        if rt.analytics is None:
            abort(404)
        refused = refused_for_patient(session)
        if refused is not None:
            return refused
        try:
            text = rt.analytics.csv(query_args(), reach_of(rt.config, session).sources)
        except ValueError as exc:
            return Response(f"{exc}\n", status=400, mimetype="text/plain")
        return Response(text, mimetype="text/csv", headers={
            "Content-Disposition": 'attachment; filename="refloop-outcomes.csv"'})

    @bp.get("/s/<sid>/dashboard/referrals")
    @with_session
    def outcome_referrals(session: Session) -> Any:
        if rt.analytics is None:
            abort(404)
        refused = refused_for_patient(session)
        if refused is not None:
            return refused
        try:
            args = query_args()
            found = rt.analytics.referrals(args, reach_of(rt.config, session).sources)
        except ValueError as exc:
            return _render(session, "smart/outcome_referrals.html", f=None, error=str(exc),
                           status=400)
        audit.record(rt.resources, audit.build_audit_event(
            session, interaction="search", patient="",
            entities=[f"Task/{row['referral_id']}" for row in found["rows"]],
            query=urlencode(args), client_id=_client_id(rt, session),
            patients=found["patients"]))
        return _render(session, "smart/outcome_referrals.html", f=found, error="")


def _render(session: Session, template: str, *, status: int = 200, **values: Any) -> Response:
    html = render_template(template, s=session, ctx=session.context,
                           base=f"/smart/s/{session.id}", **values)
    return Response(html, status=status)


def _client_id(rt: SmartRuntime, session: Session) -> str:
    tenant = rt.config.tenant(session.tenant)
    return tenant.client_id if tenant else session.tenant
