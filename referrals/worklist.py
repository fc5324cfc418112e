"""The coordinator's worklist: filters, sorts and keyset pages over the `referrals` table, and
the Patient resources of one page's rows (one primary-key query).

Pages are keyset pages (`after` a cursor), never OFFSET, and every filter has an index ending in
the sort key (migration 0005_smart), so page N costs what page 1 costs at 100,000 or 1,000,000
referrals. Open referrals carry a deadline and finished or held ones do not, so the "due" sort
walks the deadline index first and then the referrals without a deadline.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from referrals.codec import clock_from_dict
from referrals.model import TERMINAL_STAGES, Clock, Stage
from referrals.store.database import Database
from referrals.store.referrals import from_servers, from_sources
from referrals.store.schema import referral_events, referrals, resources

OPEN_STAGES = tuple(s.value for s in Stage if s not in TERMINAL_STAGES)
SORTS = ("due", "oldest", "newest", "updated")
MAX_PAGE = 200

T = referrals.c


class CursorError(ValueError):
    """A page cursor that we did not issue (or for another sort)."""


@dataclass(frozen=True)
class WorklistFilter:
    stages: tuple[str, ...] = ()  # empty: every open stage (or every stage with include_closed)
    include_closed: bool = False
    owner: str | None = None  # "" means unassigned
    priority: str = ""
    specialty: str = ""
    overdue: bool = False
    patient: str = ""
    #: with `patient`: only referrals from these FHIR servers (the launch's), since the same
    #: Patient id on another server is another person
    patient_servers: tuple[str, ...] = ()
    #: only referrals of these sources (a tenant's source-key prefixes); None: every source
    sources: tuple[str, ...] | None = None


@dataclass(frozen=True)
class WorklistRow:
    id: str
    patient: str
    service_request: str
    source_key: str
    stage: str
    priority: str
    owner: str
    specialty: str
    payer: str
    auth_state: str
    created_at: datetime
    updated_at: datetime
    deadline: datetime | None
    version: int

    def age_days(self, now: datetime) -> int:
        return max(0, (now - self.created_at).days)

    def hours_to_deadline(self, now: datetime) -> float | None:
        if self.deadline is None:
            return None
        return (self.deadline - now).total_seconds() / 3600


@dataclass(frozen=True)
class WorklistPage:
    rows: list[WorklistRow]
    next_cursor: str | None


COLUMNS = (T.id, T.patient, T.service_request, T.source_key, T.stage, T.priority, T.owner,
           T.specialty, T.payer, T.auth_state, T.created_at, T.updated_at, T.deadline, T.version)


def fetch_page(db: Database, where: WorklistFilter, *, sort: str = "due",
               after: str | None = None, limit: int = 50,
               now: datetime | None = None) -> WorklistPage:
    """One page of the worklist and the cursor of the next page (None on the last)."""
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}")
    limit = max(1, min(limit, MAX_PAGE))
    now = now or datetime.now(UTC)
    position = _decode(after, sort) if after else None
    clauses = _clauses(where, now)
    with db.read() as c:
        if sort == "due":
            rows = _due_page(c, clauses, position, limit + 1, where)
        else:
            rows = _time_page(c, clauses, sort, position, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = _encode(sort, rows[-1]) if more and rows else None
    return WorklistPage(rows=rows, next_cursor=cursor)


def count_matching(db: Database, where: WorklistFilter, now: datetime | None = None) -> int:
    """How many referrals match (used by tests and the benchmark; pages never count)."""
    with db.read() as c:
        return int(c.execute(sa.select(sa.func.count()).select_from(referrals)
                             .where(*_clauses(where, now or datetime.now(UTC)))).scalar_one())


def patient_server(source_key: str) -> str | None:
    """Where a referral's EHR resources are stored (`resources.server`), from its source key:
    fhir|<base>|... -> <base>, demo|... -> demo, hl7|<sender>|... -> hl7:<sender>."""
    kind, _, rest = source_key.partition("|")
    origin = rest.split("|", 1)[0]
    if kind == "fhir" and origin:
        return origin
    if kind == "demo":
        return "demo"
    if kind == "hl7" and origin:
        return f"hl7:{origin}"
    return None


def patient_id(reference: str) -> str | None:
    """The id in Patient/<id> (relative, absolute or versioned); None for anything else."""
    parts = reference.split("/")
    for i, part in enumerate(parts[:-1]):
        if part == "Patient" and parts[i + 1]:
            return parts[i + 1]
    return None


def fetch_clocks(db: Database, rows: list[WorklistRow]) -> dict[str, tuple[Clock, ...]]:
    """The program clocks (TEAM, ASM) of a page's rows, by referral id (rows without a clock
    are left out): one primary-key query for the page."""
    if not rows:
        return {}
    found: dict[str, tuple[Clock, ...]] = {}
    with db.read() as c:
        for referral_id, state in c.execute(sa.select(T.id, T.state).where(
                T.id.in_([row.id for row in rows]))):
            clocks = (state or {}).get("clocks") if isinstance(state, dict) else None
            if clocks:
                found[referral_id] = tuple(clock_from_dict(clock) for clock in clocks)
    return found


def fetch_patients(db: Database, rows: list[WorklistRow]) -> dict[str, dict[str, Any]]:
    """The stored Patient resource of each row that has one, by referral id: one query on the
    resources primary key for the whole page (rows whose patient is unknown are left out)."""
    wanted: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        server, pid = patient_server(row.source_key), patient_id(row.patient)
        if server is not None and pid is not None:
            wanted.setdefault((server, pid), []).append(row.id)
    if not wanted:
        return {}
    by_server: dict[str, list[str]] = {}
    for server, pid in wanted:
        by_server.setdefault(server, []).append(pid)
    R = resources.c
    query = sa.select(R.server, R.resource_id, R.body).where(
        R.resource_type == "Patient", R.deleted.is_(False),
        sa.or_(*(sa.and_(R.server == server, R.resource_id.in_(ids))
                 for server, ids in by_server.items())))
    found: dict[str, dict[str, Any]] = {}
    with db.read() as c:
        for server, pid, body in c.execute(query):
            for referral_id in wanted.get((server, pid), []):
                if isinstance(body, dict):
                    found[referral_id] = body
    return found


def _clauses(where: WorklistFilter, now: datetime) -> list[sa.ColumnElement[bool]]:
    stages = where.stages or (() if where.include_closed else OPEN_STAGES)
    clauses: list[sa.ColumnElement[bool]] = []
    if stages:
        clauses.append(T.stage.in_(stages))
    if where.owner is not None:
        clauses.append(T.owner == where.owner)
    if where.priority:
        clauses.append(T.priority == where.priority)
    if where.specialty:
        clauses.append(T.specialty == where.specialty)
    if where.patient:
        clauses.append(T.patient == where.patient)
        if where.patient_servers:
            clauses.append(from_servers(T.source_key, where.patient_servers))
    if where.sources is not None:
        clauses.append(from_sources(T.source_key, where.sources))
    if where.overdue:
        clauses.append(T.deadline < now)
    return clauses


def _due_page(c: sa.Connection, clauses: list[sa.ColumnElement[bool]],
              position: tuple[int, Any, str] | None, limit: int,
              where: WorklistFilter) -> list[WorklistRow]:
    rows: list[WorklistRow] = []
    phase, value, last_id = position or (0, None, "")
    if phase == 0:
        query = sa.select(*COLUMNS).where(*clauses, T.deadline.is_not(None))
        if value is not None:
            query = query.where(sa.or_(T.deadline > value,
                                       sa.and_(T.deadline == value, T.id > last_id)))
        rows = _rows(c, query.order_by(T.deadline, T.id).limit(limit))
        last_id = ""
    if len(rows) < limit and not where.overdue:
        query = sa.select(*COLUMNS).where(*clauses, T.deadline.is_(None))
        if last_id:
            query = query.where(T.id > last_id)
        rows += _rows(c, query.order_by(T.id).limit(limit - len(rows)))
    return rows


def _time_page(c: sa.Connection, clauses: list[sa.ColumnElement[bool]], sort: str,
               position: tuple[int, Any, str] | None, limit: int) -> list[WorklistRow]:
    column = T.updated_at if sort == "updated" else T.created_at
    descending = sort in ("newest", "updated")
    query = sa.select(*COLUMNS).where(*clauses)
    if position is not None:
        _, value, last_id = position
        if descending:
            query = query.where(sa.or_(column < value, sa.and_(column == value, T.id < last_id)))
        else:
            query = query.where(sa.or_(column > value, sa.and_(column == value, T.id > last_id)))
    order = (column.desc(), T.id.desc()) if descending else (column, T.id)
    return _rows(c, query.order_by(*order).limit(limit))


def _rows(c: sa.Connection, query: sa.Select[Any]) -> list[WorklistRow]:
    return [_row(r) for r in c.execute(query).mappings()]


def _row(r: Any) -> WorklistRow:
    return WorklistRow(
        id=r["id"], patient=r["patient"], service_request=r["service_request"],
        source_key=r["source_key"], stage=r["stage"], priority=r["priority"], owner=r["owner"],
        specialty=r["specialty"],
        payer=r["payer"], auth_state=r["auth_state"], created_at=_aware(r["created_at"]),
        updated_at=_aware(r["updated_at"]),
        deadline=_aware(r["deadline"]) if r["deadline"] is not None else None,
        version=int(r["version"]))


def _encode(sort: str, row: WorklistRow) -> str:
    if sort == "due":
        phase = 0 if row.deadline is not None else 1
        value = row.deadline.isoformat() if row.deadline else None
    else:
        phase = 0
        value = (row.updated_at if sort == "updated" else row.created_at).isoformat()
    raw = json.dumps([sort, phase, value, row.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str, sort: str) -> tuple[int, Any, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        kind, phase, value, last_id = json.loads(raw)
        moment = datetime.fromisoformat(value) if value else None
    except (ValueError, TypeError) as exc:
        raise CursorError("not a worklist cursor") from exc
    if kind != sort or phase not in (0, 1) or not isinstance(last_id, str):
        raise CursorError("the cursor belongs to another sort order; start from the first page")
    return phase, moment, last_id


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)



def actor_names(db: Database, referral_ids: list[str], references: set[str]) -> dict[str, str]:
    """The names people were recorded under when they acted on these referrals: reference ->
    the latest non-empty display among the referrals' events (one query on the referrals'
    events, so the worklist can name owners without a lookup per row)."""
    wanted = sorted(r for r in references if r)
    if not referral_ids or not wanted:
        return {}
    E = referral_events.c
    query = (sa.select(E.actor, E.actor_display)
             .where(E.referral_id.in_(referral_ids), E.actor.in_(wanted), E.actor_display != "")
             .order_by(E.at, E.id))
    with db.read() as c:
        return {str(actor): str(display) for actor, display in c.execute(query)}

