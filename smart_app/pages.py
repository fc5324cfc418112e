"""Page handlers: worklist, referral, dashboard, actions. Each view of patient data writes an
AuditEvent; every change goes through actions.perform (the lifecycle)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from flask import Response, render_template

from referrals.analytics import fall_out, funnel
from referrals.model import PRIORITIES, Clock, Referral, Stage
from referrals.sla import describe_due
from referrals.worklist import (
    OPEN_STAGES,
    SORTS,
    CursorError,
    WorklistFilter,
    actor_names,
    fetch_clocks,
    fetch_page,
    fetch_patients,
)
from smart_app import (
    actions,
    analytics_port,
    audit,
    charts,
    communications,
    referral_view,
    task_views,
)
from smart_app.actions import ActionError
from smart_app.patient_label import first_name_text, labels_for
from smart_app.reach import Reach, reach_of, unmatched_sources
from smart_app.runtime import SmartRuntime
from smart_app.sessions import Session

__all__ = ["ActionError", "act", "dashboard", "landing_url", "referral", "worklist"]

STAGE_LABELS = {s.value: s.value.replace("-", " ") for s in Stage}


def landing_url(rt: SmartRuntime, session: Session) -> str:
    """Where a finished launch goes: the referral in fhirContext, else the worklist."""
    base = f"/smart/s/{session.id}"
    reach = reach_of(rt.config, session)
    for reference in session.context.fhir_context:
        found = None
        if reference.startswith("ServiceRequest/"):
            found = rt.store.try_get_by_service_request(reference)
        elif reference.startswith("Task/"):
            found = rt.store.try_get(reference.split("/", 1)[1])
        if found is not None and reach.allows(found.source_key, found.patient):
            return f"{base}/referrals/{found.id}"
    return f"{base}/"


def read_filter(session: Session, args: Mapping[str, str], reach: Reach
                ) -> tuple[WorklistFilter, dict[str, str]]:
    """The filter from the query string, within the launch's reach; launched for a patient, the
    patient's referrals from the launch's FHIR servers, and only those when the EHR limited the
    launch to that patient (the whole panel cannot be asked for then)."""
    chosen = {k: args.get(k, "") for k in ("stage", "owner", "priority", "specialty", "overdue",
                                           "sort", "panel")}
    if reach.patient_limited:
        chosen["panel"] = ""
    owner: str | None = None
    if chosen["owner"] == "me":
        owner = session.context.user
    elif chosen["owner"] == "unassigned":
        owner = ""
    stage = chosen["stage"]
    patient = session.context.patient if chosen["panel"] != "all" else ""
    servers = reach.patient_servers or (session.iss,)
    where = WorklistFilter(
        stages=(stage,) if stage in STAGE_LABELS else (),
        include_closed=stage == "all", owner=owner,
        priority=chosen["priority"] if chosen["priority"] in PRIORITIES else "",
        specialty=chosen["specialty"][:128], overdue=chosen["overdue"] == "1", patient=patient,
        patient_servers=servers if patient else (), sources=reach.query_sources)
    return where, chosen


def worklist(rt: SmartRuntime, session: Session, args: Mapping[str, str]) -> Response:
    reach = reach_of(rt.config, session)
    where, chosen = read_filter(session, args, reach)
    sort = chosen["sort"] if chosen["sort"] in SORTS else "due"
    now = datetime.now(UTC)
    error = ""
    try:
        page = fetch_page(rt.db, where, sort=sort, after=args.get("after") or None, now=now)
    except CursorError as exc:
        error = str(exc)
        page = fetch_page(rt.db, where, sort=sort, now=now)
    people = labels_for(page.rows, fetch_patients(rt.db, page.rows), now)
    owners = owner_names(rt, session, [r.id for r in page.rows], {r.owner for r in page.rows})
    clocks = fetch_clocks(rt.db, page.rows)
    audit.record(rt.resources, audit.build_audit_event(
        session, interaction="search", patient=where.patient,
        entities=[], query=urlencode({k: v for k, v in chosen.items() if v}),
        client_id=_client_id(rt, session), patients=[r.patient for r in page.rows]))
    keep = {k: v for k, v in chosen.items() if v}
    next_url = f"?{urlencode({**keep, 'sort': sort, 'after': page.next_cursor})}" \
        if page.next_cursor else ""
    html = render_template("smart/worklist.html", s=session, page=page, people=people, now=now,
                           chosen=chosen,
                           sort=sort, sorts=SORTS, stages=OPEN_STAGES, all_stages=STAGE_LABELS,
                           priorities=PRIORITIES, next_url=next_url, error=error,
                           patient_scoped=bool(where.patient), ctx=session.context,
                           whole_panel_allowed=not reach.patient_limited,
                           owners=owners,
                           due=_due, base=f"/smart/s/{session.id}", clocks=clocks,
                           clock_text=_clock_text,
                           task_rows=task_views.rows(task_views.open_on_worklist(
                               rt, where.patient, where.patient_servers, where.sources), now),
                           sources_notice=None if page.rows else unmatched_sources(rt, session))
    return Response(html)


def referral(rt: SmartRuntime, session: Session, referral_id: str, *, done: str = "",
             error: str = "", status: int = 200, notice: str = "") -> Response:
    page = referral_view.load_page(rt, referral_id, session)
    audit.record(rt.resources, audit.build_audit_event(
        session, interaction="read", patient=page.referral.patient,
        entities=[f"Task/{page.referral.id}", *page.patient_references],
        client_id=_client_id(rt, session)))
    spec = actions.ACTIONS.get(done)
    now = datetime.now(UTC)
    html = render_template(
        "smart/referral.html", s=session, p=page, r=page.referral, ctx=session.context,
        now=now, done=spec.label if spec else notice, error=error,
        task_rows=task_views.rows(task_views.open_for_referral(rt, referral_id), now),
        outreach_entries=communications.timeline(rt, referral_id),
        offered=actions.available(page.referral), pas_enabled=rt.pas_enabled,
        pas_disabled=actions.PAS_DISABLED, view=referral_view, due=_due, clock_text=_clock_text,
        base=f"/smart/s/{session.id}", banner=_banner(session, page),
        owners=owner_names(rt, session, [referral_id], {page.referral.owner}),
        sched=rt.scheduling.summary(referral_id) if rt.scheduling else None)
    return Response(html, status=status)


def act(rt: SmartRuntime, session: Session, referral_id: str, name: str,
        form: Mapping[str, str]) -> Referral:
    done, _message = actions.perform(rt, session, referral_id, name, form)
    return done


def dashboard(rt: SmartRuntime, session: Session) -> Response:
    refused = analytics_port.refused_for_patient(session)
    if refused is not None:
        return refused
    if rt.analytics is not None:
        return analytics_port.outcomes_page(rt, session)
    now = datetime.now(UTC)
    sources = reach_of(rt.config, session).sources
    steps = [(step.name, step.count) for step in funnel(rt.db, sources)]
    lost = fall_out(rt.db, sources)
    aging = charts.aging_buckets(rt.db, now, sources)
    html = render_template("smart/dashboard.html", s=session, ctx=session.context,
                           funnel=charts.funnel_bars(steps), lost=sorted(lost.items()),
                           aging=charts.column_bars(aging), base=f"/smart/s/{session.id}",
                           sources_notice=unmatched_sources(rt, session))
    return Response(html)


def _banner(session: Session, page: referral_view.ReferralPage) -> dict[str, Any] | None:
    """The patient banner (unless the EHR says it shows one: need_patient_banner false), from
    the Patient of the server the referral came from; when that cannot be read the banner says
    so instead of naming anyone."""
    if not session.context.need_patient_banner:
        return None
    reference = page.referral.patient
    patient = page.patient
    if patient is None:
        return {"known": False, "reference": reference,
                "problem": page.problem(reference) or "the referral names no patient"}
    label, value = patient_identifier(patient)
    return {"known": True, "reference": reference,
            "name": first_name_text(patient) or "(no name recorded)",
            "birth_date": str(patient.get("birthDate") or ""),
            "gender": str(patient.get("gender") or ""), "id_label": label, "id_value": value}


def patient_identifier(patient: dict[str, Any]) -> tuple[str, str]:
    """("MRN", value) for the medical record number (identifier type MR), else ("ID", the first
    identifier's value); ("", "") when there is none."""
    found = [i for i in patient.get("identifier") or [] if isinstance(i, dict) and i.get("value")]
    for identifier in found:
        codes = {c.get("code") for c in (identifier.get("type") or {}).get("coding") or []}
        if "MR" in codes:
            return "MRN", str(identifier["value"])
    return ("ID", str(found[0]["value"])) if found else ("", "")


def owner_names(rt: SmartRuntime, session: Session, referral_ids: list[str],
                owners: set[str]) -> dict[str, str]:
    """A name for each owner reference: the signed-in user's own, else the name the owner was
    recorded under when acting on these referrals; unknown owners are left out."""
    names = actor_names(rt.db, referral_ids, {o for o in owners if o})
    user = session.context.user
    if user in owners and session.context.user_display:
        names[user] = f"{session.context.user_display} (you)"
    return names


def _due(deadline: datetime | None, now: datetime) -> dict[str, Any]:
    text, overdue = describe_due(deadline, now)
    return {"text": text, "overdue": overdue}


def _clock_text(clock: Clock, now: datetime) -> dict[str, Any]:
    """A program clock on the worklist: `TEAM visit due in 12 d`, `ASM report met`."""
    what = f"{clock.program.upper()} {clock.goal}"
    if clock.met_at is not None:
        return {"text": f"{what} met", "overdue": False}
    if clock.missed_at is not None:
        return {"text": f"{what} missed", "overdue": True}
    due = _due(clock.due_at, now)
    text = due["text"] if due["overdue"] else f"due in {due['text']}"
    return {"text": f"{what} {text}", "overdue": due["overdue"]}


def _client_id(rt: SmartRuntime, session: Session) -> str:
    tenant = rt.config.tenant(session.tenant)
    return tenant.client_id if tenant else session.tenant
