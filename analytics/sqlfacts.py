"""The definitions of analytics.metrics (`reached`, `totals_of`, `drop_key`, `is_overdue`) as
SQL conditions on `analytics_facts`, for what is counted in the database: the breakdown tables
and the lists of referrals behind each number. tests/integration/analytics checks that both
spellings count the same referrals."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from analytics.metrics import STEPS
from analytics.tables import analytics_facts

F = analytics_facts.c
KEPT = sa.not_(F.withdrawn)


def reached(step: str) -> sa.ColumnElement[bool]:
    """The referral reached `step` (a later milestone implies the earlier ones)."""
    later = {"accepted": F.accepted_at, "contacted": F.contacted_at,
             "scheduled": F.scheduled_at, "visited": F.visit_at}
    if step == "detected":
        return sa.true()
    if step == "report received":
        return F.receipt_at.is_not(None)
    index = STEPS.index(step)
    names = list(later)[list(later).index(step):] if step in later else []
    assert names and index > 0
    return sa.or_(*(later[name].is_not(None) for name in names))


def counted(name: str) -> sa.ColumnElement[bool]:
    """The condition under which a referral adds 1 to the count `name` (Totals field)."""
    steps = {"accepted": "accepted", "contacted": "contacted", "scheduled": "scheduled",
             "visited": "visited", "receipts": "report received"}
    if name in steps:
        return sa.and_(KEPT, reached(steps[name]))
    conditions: dict[str, sa.ColumnElement[bool]] = {
        "referrals": sa.true(), "withdrawn": F.withdrawn,
        "notes": sa.and_(KEPT, F.note_at.is_not(None)), "open": F.open,
        "auth_requested": F.auth_requested_at.is_not(None),
        "auth_decided": F.auth_decided_at.is_not(None),
        "no_shows": F.no_shows > 0,
    }
    for program in ("team", "asm"):
        due, met, missed = (F[f"{program}_{what}_at"] for what in ("due", "met", "missed"))
        conditions.update({
            f"{program}_started": due.is_not(None),
            f"{program}_on_time": sa.and_(due.is_not(None), met.is_not(None), met <= due),
            f"{program}_late": sa.and_(due.is_not(None), met.is_not(None), met > due),
            f"{program}_missed": sa.and_(due.is_not(None), met.is_(None),
                                         missed.is_not(None))})
    return conditions[name]


def totals_columns() -> list[sa.ColumnElement[Any]]:
    """SUM columns, labelled with the Totals field names."""
    columns: list[sa.ColumnElement[Any]] = []
    for name in ("referrals", "withdrawn", "accepted", "contacted", "scheduled", "visited",
                 "notes", "receipts", "open", "auth_requested", "auth_decided",
                 *(f"{program}_{what}" for program in ("team", "asm")
                   for what in ("started", "on_time", "late", "missed"))):
        columns.append(sa.func.coalesce(sa.func.sum(
            sa.case((counted(name), 1), else_=0)), 0).label(name))
    for name in ("no_shows", "steps_refloop", "steps_person"):
        columns.append(sa.func.coalesce(sa.func.sum(F[name]), 0).label(name))
    return columns


def overdue(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(F.open, F.deadline.is_not(None), F.deadline < now)


def dropped(step: str, outcome: str, reason: str) -> sa.ColumnElement[bool]:
    """Ended without a visit (`outcome` declined, cancelled, failed) with `reason` (`none`: no
    code), after reaching `step` and not the next one."""
    index = STEPS.index(step)
    conditions = [F.dropped == outcome, F.visit_at.is_(None),
                  F.drop_reason == ("" if reason == "none" else reason)]
    if index + 1 < len(STEPS):
        conditions.append(sa.not_(reached(STEPS[index + 1])))
    if index > 0:
        conditions.append(reached(step))
    return sa.and_(*conditions)
