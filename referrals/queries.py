"""Read-side queries over referrals: Task search for the FHIR facade."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from referrals.store.database import Database
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
    patients: list[str] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)
    focus: list[str] = field(default_factory=list)
    last_updated: list[DateBound] = field(default_factory=list)
    count: int = 50
    offset: int = 0
    newest_first: bool = True


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
               "business_statuses": referrals.c.business_status, "patients": referrals.c.patient,
               "owners": referrals.c.owner, "focus": referrals.c.service_request}
    clauses: list[sa.ColumnElement[bool]] = [
        column.in_(getattr(query, name)) for name, column in columns.items()
        if getattr(query, name)]
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


def precision_end(start: datetime, text: str) -> datetime:
    """End of the interval a FHIR date string covers (year, month, day, or an instant)."""
    if len(text) == 4:
        return start.replace(year=start.year + 1)
    if len(text) == 7:
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    if len(text) == 10:
        return start + timedelta(days=1)
    return start + timedelta(seconds=1) if "." not in text else start + timedelta(microseconds=1)
