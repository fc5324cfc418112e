"""Coordinator actions: a form becomes lifecycle Commands, applied through
ReferralService.act (the one way a referral changes); nothing here bypasses the lifecycle."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from referrals.errors import ConflictError, RefloopError
from referrals.lifecycle import TABLE
from referrals.model import (
    LINK_APPOINTMENT,
    LINK_CONSULT_NOTE,
    Actor,
    Command,
    Link,
    Reason,
    Referral,
    Stage,
)
from smart_app import reach
from smart_app.runtime import SmartRuntime
from smart_app.sessions import Session

PAS_KIND = "pas.submit"
PAS_DISABLED = ("Prior authorization cannot be requested from here yet: no PAS client is "
                "configured on this Refloop server (no handler for pas.submit work). Ask IT to "
                "enable the PAS adapter.")


class ActionError(RefloopError):
    """The form is incomplete or wrong; the message says what to fill in."""


@dataclass(frozen=True)
class ActionSpec:
    name: str
    label: str
    lifecycle: tuple[str, ...]  # lifecycle actions, any one of which makes it available
    fields: tuple[str, ...] = ()


ACTIONS: dict[str, ActionSpec] = {a.name: a for a in (
    ActionSpec("accept", "Accept", ("accept",)),
    ActionSpec("decline", "Decline", ("decline",), ("reason",)),
    ActionSpec("take", "Take ownership", ("assign",)),
    ActionSpec("assign", "Assign", ("assign",), ("owner",)),
    ActionSpec("hold", "Put on hold", ("hold",), ("reason",)),
    ActionSpec("resume", "Resume", ("resume",)),
    ActionSpec("record-outreach", "Record outreach attempt", ("record-outreach", "start-outreach"),
               ("channel", "outcome", "note")),
    ActionSpec("schedule", "Record appointment", ("schedule",), ("start", "location")),
    ActionSpec("no-show", "Mark no-show", ("no-show",)),
    ActionSpec("complete-visit", "Mark visit completed", ("complete-visit",)),
    ActionSpec("request-authorization", "Request prior authorization",
               ("request-authorization",)),
    ActionSpec("link-note", "Attach consult note", ("link",), ("note_reference", "note_text")),
    ActionSpec("close-loop", "Close the loop", ("close-loop",),
               ("note_reference", "note_text")),
    ActionSpec("request-cancel", "Request cancellation", ("request-cancel",), ("reason",)),
    ActionSpec("cancel", "Cancel", ("cancel",), ("reason",)),
)}


#: auth states of a referral waiting for authorization that the page offers to request: none
#: sent yet (the coverage check found it required), or the payer refused the last request
#: (once what it named is corrected, the request is made again)
REQUESTABLE = frozenset({"required", "rejected"})


def available(referral: Referral) -> list[ActionSpec]:
    """Actions the lifecycle allows from the referral's stage (what the page offers); a
    referral waiting for an authorization nobody has requested yet, or that the payer refused,
    offers the request."""
    return [spec for spec in ACTIONS.values()
            if any(referral.stage in TABLE[a].sources for a in spec.lifecycle)
            or (spec.name == "request-authorization" and _requestable(referral))]


def _requestable(referral: Referral) -> bool:
    return referral.stage == Stage.AUTH_PENDING and referral.auth_state in REQUESTABLE


def perform(rt: SmartRuntime, session: Session, referral_id: str, name: str,
            form: Mapping[str, str]) -> tuple[Referral, str]:
    """Apply the named action; (referral after it, message for the user). Raises
    IllegalTransition, ConflictError (the page was stale) or ActionError."""
    referral = reach.checked(rt, session, referral_id)
    spec = ACTIONS.get(name)
    if spec is None:
        raise ActionError(f"unknown action {name!r}")
    actor = Actor(session.context.user, session.context.user_display, "human")
    expected = _version(form)
    runner = _RUNNERS[name]
    return runner(rt, referral, actor, expected, form)


def _cmd(action: str, actor: Actor, **kwargs: Any) -> Command:
    return Command(action, actor=actor, at=datetime.now(UTC), source="smart-app", **kwargs)


def _simple(action: str, message: str, needs_reason: bool = False) -> Any:
    def run(rt: SmartRuntime, referral: Referral, actor: Actor, expected: int | None,
            form: Mapping[str, str]) -> tuple[Referral, str]:
        reason = _reason(form, required=needs_reason)
        done = rt.referrals.act(referral.id, _cmd(action, actor, reason=reason),
                                expected_version=expected)
        return done, message
    return run


def _no_show(rt: SmartRuntime, referral: Referral, actor: Actor, expected: int | None,
             form: Mapping[str, str]) -> tuple[Referral, str]:
    """Name the appointment missed (the latest linked), as the calendar and v2 paths do, so
    the referrer hears which visit it was."""
    current = [link for link in referral.outputs if link.is_a(LINK_APPOINTMENT)][-1:]
    changes = {"add_outputs": current} if current else {}
    reason = _reason(form, required=False)
    done = rt.referrals.act(referral.id, _cmd("no-show", actor, reason=reason, changes=changes),
                            expected_version=expected)
    return done, "No-show recorded."


def _take(rt: SmartRuntime, referral: Referral, actor: Actor, expected: int | None,
          form: Mapping[str, str]) -> tuple[Referral, str]:
    done = rt.referrals.act(referral.id, _cmd("assign", actor, changes={"owner": actor.reference}),
                            expected_version=expected)
    return done, "You own this referral now."


def _assign(rt: SmartRuntime, referral: Referral, actor: Actor, expected: int | None,
            form: Mapping[str, str]) -> tuple[Referral, str]:
    owner = form.get("owner", "").strip()
    if not owner or "/" not in owner:
        raise ActionError("enter the new owner as a reference, e.g. PractitionerRole/123")
    done = rt.referrals.act(referral.id, _cmd("assign", actor, changes={"owner": owner}),
                            expected_version=expected)
    return done, f"Assigned to {owner}."


#: the outcomes the referral page offers (any other text went into a 128-character column:
#: PostgreSQL answered 500 to a long one)
OUTREACH_OUTCOMES = ("reached", "no-answer", "left-message", "wrong-number")


def _outreach(rt: SmartRuntime, referral: Referral, actor: Actor, expected: int | None,
              form: Mapping[str, str]) -> tuple[Referral, str]:
    channel = form.get("channel", "phone") or "phone"
    outcome = form.get("outcome", "").strip()
    if outcome not in OUTREACH_OUTCOMES:
        raise ActionError("choose the outcome of the outreach attempt")
    note = form.get("note", "").strip()
    reason = Reason(outcome, f"{channel}: {note}" if note else channel)
    with rt.db.write() as c:
        current = rt.store.get(referral.id, c)
        if expected is not None and current.version != expected:
            raise ConflictError(f"referral {referral.id}", expected, current.version)
        if current.stage in TABLE["start-outreach"].sources:
            current = rt.referrals.act(referral.id, _cmd("start-outreach", actor), conn=c)
        done = rt.referrals.act(referral.id, _cmd("record-outreach", actor, reason=reason),
                                expected_version=current.version, conn=c)
    return done, f"Outreach attempt {done.outreach_attempts} recorded."


def _schedule(rt: SmartRuntime, referral: Referral, actor: Actor, expected: int | None,
              form: Mapping[str, str]) -> tuple[Referral, str]:
    start = _moment(form.get("start", ""))
    location = form.get("location", "").strip()
    participants: list[dict[str, Any]] = [
        {"actor": {"reference": referral.patient}, "status": "accepted"}]
    if location:
        participants.append({"actor": {"display": location}, "status": "accepted"})
    appointment = {
        "resourceType": "Appointment", "id": str(uuid.uuid4()), "status": "booked",
        "start": start.isoformat(), "basedOn": [{"reference": referral.service_request}],
        "participant": participants,
    }
    link = Link(LINK_APPOINTMENT, f"Appointment/{appointment['id']}",
                start.strftime("%Y-%m-%d %H:%M"))
    with rt.db.write() as c:
        rt.resources.put(appointment, server="local", conn=c)
        done = rt.referrals.act(referral.id, _cmd("schedule", actor,
                                                  changes={"add_outputs": [link]}),
                                expected_version=expected, conn=c)
    return done, f"Appointment recorded for {link.display} UTC."


def _authorization(rt: SmartRuntime, referral: Referral, actor: Actor, expected: int | None,
                   form: Mapping[str, str]) -> tuple[Referral, str]:
    if not rt.pas_enabled:
        raise ActionError(PAS_DISABLED)
    action = "amend" if _requestable(referral) else "request-authorization"
    with rt.db.write() as c:
        done = rt.referrals.act(referral.id, _cmd(action, actor,
                                                  changes={"auth_state": "requested"}),
                                expected_version=expected, conn=c)
        rt.work.enqueue(PAS_KIND, {"referral_id": done.id, "payer": done.payer},
                        key=f"{PAS_KIND}:{done.id}:{done.version}", conn=c)
    return done, "Prior authorization requested; the PAS request is queued."


def _note_link(rt: SmartRuntime, referral: Referral, form: Mapping[str, str], c: Any) -> Link:
    reference = form.get("note_reference", "").strip()
    text = form.get("note_text", "").strip()
    if reference:
        if not reference.startswith("DocumentReference/") or len(reference.split("/")) != 2:
            raise ActionError("the consult note reference must look like DocumentReference/123")
        return Link(LINK_CONSULT_NOTE, reference)
    if not text:
        raise ActionError("link a consult note (DocumentReference/...) or paste its text")
    document = {
        "resourceType": "DocumentReference", "id": str(uuid.uuid4()), "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4",
                             "display": "Consult note"}]},
        "subject": {"reference": referral.patient},
        "date": datetime.now(UTC).isoformat(),
        "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                                    "data": base64.b64encode(text.encode()).decode()}}],
    }
    rt.resources.put(document, server="local", conn=c)
    return Link(LINK_CONSULT_NOTE, f"DocumentReference/{document['id']}", "Consult note")


def _link_note(rt: SmartRuntime, referral: Referral, actor: Actor, expected: int | None,
               form: Mapping[str, str]) -> tuple[Referral, str]:
    with rt.db.write() as c:
        link = _note_link(rt, referral, form, c)
        done = rt.referrals.act(referral.id, _cmd("link", actor, changes={"add_outputs": [link]}),
                                expected_version=expected, conn=c)
    return done, "Consult note attached."


def _close_loop(rt: SmartRuntime, referral: Referral, actor: Actor, expected: int | None,
                form: Mapping[str, str]) -> tuple[Referral, str]:
    has_note = any(link.is_a(LINK_CONSULT_NOTE) for link in referral.outputs)
    with rt.db.write() as c:
        changes: dict[str, Any] = {}
        if form.get("note_reference", "").strip() or form.get("note_text", "").strip() \
                or not has_note:
            changes["add_outputs"] = [_note_link(rt, referral, form, c)]
        done = rt.referrals.act(referral.id, _cmd("close-loop", actor, changes=changes),
                                expected_version=expected, conn=c)
    return done, "Loop closed: the consult note is linked to the referral."


_RUNNERS: dict[str, Any] = {
    "accept": _simple("accept", "Referral accepted."),
    "decline": _simple("decline", "Referral declined.", needs_reason=True),
    "take": _take, "assign": _assign,
    "hold": _simple("hold", "Referral put on hold.", needs_reason=True),
    "resume": _simple("resume", "Referral resumed."),
    "record-outreach": _outreach, "schedule": _schedule,
    "no-show": _no_show,
    "complete-visit": _simple("complete-visit", "Visit completed: the consult note is owed "
                              "from now on."),
    "request-authorization": _authorization,
    "link-note": _link_note, "close-loop": _close_loop,
    "request-cancel": _simple("request-cancel", "Cancellation requested.", needs_reason=True),
    "cancel": _simple("cancel", "Referral cancelled.", needs_reason=True),
}


def _reason(form: Mapping[str, str], *, required: bool) -> Reason | None:
    code = form.get("reason_code", "").strip()
    text = form.get("reason_text", "").strip()
    if not code and not text:
        if required:
            raise ActionError("this action needs a reason: choose one or describe it")
        return None
    return Reason(code or "other", text)


def _version(form: Mapping[str, str]) -> int | None:
    raw = form.get("version", "")
    return int(raw) if raw.isdigit() else None


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ActionError("enter the appointment date and time, e.g. 2025-07-01T09:30") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
