"""Coordinator tasks in the app: the open tasks shown on the worklist and on the referral page,
and recording a task's outcome (the task's owner adapter acts on it through the work queue)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from referrals.coordinator import CoordinatorTask, TaskError, outcome_label
from referrals.model import Actor
from smart_app import reach
from smart_app.runtime import SmartRuntime
from smart_app.sessions import Session

__all__ = ["TaskError", "open_for_referral", "open_on_worklist", "record_outcome", "rows"]

#: how many open tasks the worklist shows above the referrals
WORKLIST_TASKS = 25


def open_on_worklist(rt: SmartRuntime, patient: str = "", servers: tuple[str, ...] = (),
                     sources: tuple[str, ...] | None = None) -> list[CoordinatorTask]:
    """Open tasks of the referrals of `sources` (None: all); launched for a patient, that
    patient's (on the launch's servers)."""
    if rt.tasks is None:
        return []
    return rt.tasks.list_open(patient=patient or None, patient_servers=servers,
                              sources=sources, limit=WORKLIST_TASKS)


def open_for_referral(rt: SmartRuntime, referral_id: str) -> list[CoordinatorTask]:
    return rt.tasks.open_for(referral_id) if rt.tasks is not None else []


def rows(tasks: list[CoordinatorTask], now: datetime) -> list[dict[str, Any]]:
    """What the task list shows for each task."""
    return [{"task": t, "label": t.label, "reason": t.reason,
             "due": t.due_at.strftime("%Y-%m-%d %H:%M") if t.due_at else "",
             "overdue": t.overdue(now),
             "outcomes": [(o, outcome_label(o)) for o in t.outcomes]} for t in tasks]


def record_outcome(rt: SmartRuntime, session: Session, task_id: str,
                   form: Mapping[str, str]) -> CoordinatorTask:
    """Complete the task with the outcome the person chose; raises TaskError or NotFound."""
    if rt.tasks is None:
        raise TaskError("coordinator tasks are not available on this server")
    outcome = form.get("outcome", "").strip()
    if not outcome:
        raise TaskError("choose what happened before recording the outcome")
    reach.checked(rt, session, rt.tasks.get(task_id).referral_id)
    actor = Actor(session.context.user, session.context.user_display, "human")
    return rt.tasks.complete(task_id, outcome, actor, form.get("note", "").strip()[:300])
