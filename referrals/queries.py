"""Read-side queries over referrals: Task search for the FHIR facade."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from referrals.store.database import Database
from referrals.store.referrals import from_sources
from referrals.store.schema import referrals


@dataclass(frozen=True)
class DateBound:
    """A FHIR date search value: prefix plus the half-open interval its precision covers."""

    prefix: str
    start: datetime
    end: datetime


@dataclass
class TaskQuery:
    ids: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    business_statuses: list[str] = field(default_factory=list)
    #: internal stage codes (Task.businessStatus's second coding); OR-ed with business_statuses
    stages: list[str] = field(default_factory=list)
    patients: list[str] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)
    focus: list[str] = field(default_factory=list)
    last_updated: list[DateBound] = field(default_factory=list)
    count: int = 50
    offset: int = 0
    newest_first: bool = True
    #: the caller's compartment: only this patient's referrals (Patient/123), and only those
    #: whose source key starts with one of these sources (None: every source)
    within_patient: str | None = None
    within_sources: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TaskRow:
    task: dict[str, Any]
    patient: str
    source_key: str

    def within(self, patient: str | None, sources: tuple[str, ...] | None) -> bool:
        """True when this referral is in the compartment (see TaskQuery.within_*)."""
        return (patient is None or self.patient == patient) and \
            (sources is None or any(self.source_key.startswith(s + "|") for s in sources))


def read_task(db: Database, task_id: str) -> TaskRow | None:
    """One referral's Task with what decides who may read it."""
    with db.read() as c:
        row = c.execute(sa.select(referrals.c.task, referrals.c.patient, referrals.c.source_key)
                        .where(referrals.c.id == task_id)).first()
    return TaskRow(row.task, row.patient, row.source_key) if row else None


def search_tasks(db: Database, query: TaskQuery) -> tuple[list[dict[str, Any]], int]:
    """Matching Task resources for one page, and the total number of matches."""
    clauses = _clauses(query)
    order = (referrals.c.updated_at.desc(), referrals.c.id) if query.newest_first \
        else (referrals.c.updated_at, referrals.c.id)
    page = sa.select(referrals.c.task).where(*clauses).order_by(*order)
    with db.read() as c:
        total = c.execute(sa.select(sa.func.count()).select_from(referrals)
                          .where(*clauses)).scalar_one()
        tasks = list(c.execute(page.limit(query.count).offset(query.offset)).scalars()) \
            if query.count else []
    return tasks, int(total)


def _clauses(query: TaskQuery) -> list[sa.ColumnElement[bool]]:
    columns = {"ids": referrals.c.id, "statuses": referrals.c.task_status,
               "patients": referrals.c.patient, "owners": referrals.c.owner,
               "focus": referrals.c.service_request}
    clauses: list[sa.ColumnElement[bool]] = [
        column.in_(getattr(query, name)) for name, column in columns.items()
        if getattr(query, name)]
    business = [column.in_(values) for column, values in (
        (referrals.c.business_status, query.business_statuses),
        (referrals.c.stage, query.stages)) if values]
    if business:
        clauses.append(sa.or_(*business))
    if query.within_patient is not None:
        clauses.append(referrals.c.patient == query.within_patient)
    if query.within_sources is not None:
        clauses.append(from_sources(referrals.c.source_key, query.within_sources))
    updated = referrals.c.updated_at
    for bound in query.last_updated:
        if bound.prefix == "eq":
            clauses += [updated >= bound.start, updated < bound.end]
        elif bound.prefix == "ge":
            clauses.append(updated >= bound.start)
        elif bound.prefix == "gt":
            clauses.append(updated >= bound.end)
        elif bound.prefix == "le":
            clauses.append(updated < bound.end)
        elif bound.prefix == "lt":
            clauses.append(updated < bound.start)
    return clauses


_TIME = re.compile(r"T\d{2}:\d{2}(?::\d{2}(?:\.(\d+))?)?")


def precision_end(start: datetime, text: str) -> datetime:
    """End of the interval a FHIR date string covers: its year, month, day, minute, second or
    fraction of a second (`2026`, `2026-03`, `2026-03-01`, `...T10:00`, `...T10:00:05.12Z`)."""
    if len(text) == 4:
        return start.replace(year=start.year + 1)
    if len(text) == 7:
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    time = _TIME.search(text)
    if len(text) == 10 or time is None:
        return start + timedelta(days=1)
    if time.group(0).count(":") == 1:
        return start + timedelta(minutes=1)
    digits = time.group(1)
    if digits is None:
        return start + timedelta(seconds=1)
    return start + timedelta(microseconds=max(1, 10 ** (6 - min(len(digits), 6))))
