"""Coordinator tasks in the store (table `coordinator_tasks`): opened by any adapter, idempotent on
its key, completed by a person with one of the task's outcomes.

Completing a task enqueues, in the same transaction, one work item of the task's `on_outcome`
kind with `{"task_id", "referral_id", "kind", "outcome", "note", "actor", "actor_display",
"data"}`, so the adapter that opened the task acts on the outcome exactly once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from referrals.coordinator import CANCELLED, COMPLETED, OPEN, CoordinatorTask, TaskError
from referrals.errors import NotFound
from referrals.model import Actor
from referrals.store.database import Database
from referrals.store.referrals import from_servers, from_sources
from referrals.store.schema import coordinator_tasks as table
from referrals.store.schema import referrals
from referrals.store.work import WorkQueue

ActorLike = Actor | str


class CoordinatorTasks:
    def __init__(self, db: Database, work: WorkQueue) -> None:
        self.db = db
        self.work = work

    def open(self, referral_id: str, kind: str, reason: str, *, due_at: datetime | None = None,
             outcomes: Iterable[str], on_outcome: str | None = None, key: str,
             data: dict[str, Any] | None = None, conn: Connection | None = None) -> str:
        """Open a task once per `key`; returns its id (the existing one when the key was used)."""
        choices = list(dict.fromkeys(outcomes))
        if not choices:
            raise TaskError(f"a {kind} task needs at least one outcome to choose from")
        values = {"id": str(uuid.uuid4()), "key": key, "referral_id": referral_id, "kind": kind,
                  "reason": reason, "status": OPEN, "due_at": due_at, "outcomes": choices,
                  "on_outcome": on_outcome, "data": data or {}, "created_at": _now()}
        insert = (postgresql.insert(table) if self.db.dialect == "postgresql"
                  else sqlite.insert(table))
        statement = (insert.values(**values).on_conflict_do_nothing(index_elements=["key"])
                     .returning(table.c.id))
        with self.db.using(conn) as c:
            created = c.execute(statement).scalar()
            if created is not None:
                return str(created)
            return str(c.execute(sa.select(table.c.id).where(table.c.key == key)).scalar_one())

    def complete(self, task_id: str, outcome: str, actor: ActorLike, note: str = "", *,
                 conn: Connection | None = None) -> CoordinatorTask:
        """Record the outcome and hand it to the task's `on_outcome` work kind (one commit).

        Recording the same outcome again returns the task unchanged (a double submit); another
        outcome on a closed task, or one the task does not offer, raises TaskError."""
        who = _actor(actor)
        with self.db.using(conn) as c:
            task = self._locked(c, task_id)
            if task.status == COMPLETED and task.outcome == outcome:
                return task
            if not task.is_open:
                raise TaskError(f"the task was already {task.status}"
                                + (f" ({task.outcome})" if task.outcome else "")
                                + f" by {task.actor_display or task.actor or 'the system'}")
            if outcome not in task.outcomes:
                raise TaskError(f"{outcome!r} is not an outcome of a {task.kind} task; choose "
                                f"one of {', '.join(task.outcomes)}")
            done = self._close(c, task, COMPLETED, who, note, outcome)
            if task.on_outcome:
                self.work.enqueue(task.on_outcome, _outcome_payload(done),
                                  key=f"{task.on_outcome}:{task.id}", conn=c)
            return done

    def cancel(self, task_id: str, actor: ActorLike, note: str = "", *,
               conn: Connection | None = None) -> CoordinatorTask:
        """Close an open task without an outcome (no longer needed); a closed task is returned
        as it is."""
        with self.db.using(conn) as c:
            task = self._locked(c, task_id)
            if not task.is_open:
                return task
            return self._close(c, task, CANCELLED, _actor(actor), note, None)

    def cancel_open(self, referral_id: str, actor: ActorLike, note: str = "", *,
                    kind: str | None = None, conn: Connection | None = None) -> int:
        """Cancel every open task of a referral (of one kind); how many were cancelled."""
        who = _actor(actor)
        where = [table.c.referral_id == referral_id, table.c.status == OPEN]
        if kind is not None:
            where.append(table.c.kind == kind)
        with self.db.using(conn) as c:
            return int(c.execute(table.update().where(*where).values(
                status=CANCELLED, actor=who.reference, actor_display=who.display,
                note=note[:2000], closed_at=_now())).rowcount)

    def get(self, task_id: str, conn: Connection | None = None) -> CoordinatorTask:
        found = self.try_get(task_id, conn)
        if found is None:
            raise NotFound(f"no coordinator task {task_id}")
        return found

    def try_get(self, task_id: str, conn: Connection | None = None) -> CoordinatorTask | None:
        query = sa.select(table).where(table.c.id == task_id)
        if conn is not None:
            row = conn.execute(query).mappings().first()
        else:
            with self.db.read() as c:
                row = c.execute(query).mappings().first()
        return _task(row) if row else None

    def open_for(self, referral_id: str, conn: Connection | None = None
                 ) -> list[CoordinatorTask]:
        """The referral's open tasks, due soonest first."""
        return self._select([table.c.referral_id == referral_id, table.c.status == OPEN],
                            conn=conn)

    def for_referral(self, referral_id: str) -> list[CoordinatorTask]:
        """Every task of the referral, open and closed, oldest first."""
        return self._select([table.c.referral_id == referral_id],
                            order=[table.c.created_at, table.c.id])

    def list_open(self, *, kind: str | None = None, referral_ids: Iterable[str] | None = None,
                  patient: str | None = None, patient_servers: tuple[str, ...] = (),
                  sources: tuple[str, ...] | None = None,
                  limit: int = 100) -> list[CoordinatorTask]:
        """Open tasks, due soonest first (tasks without a due time last); `patient` keeps the
        tasks of that patient's referrals (from `patient_servers` only, when given: the same
        Patient id on another server is another person); `sources` those of referrals of
        these sources (a tenant's)."""
        where = [table.c.status == OPEN]
        if kind is not None:
            where.append(table.c.kind == kind)
        if referral_ids is not None:
            where.append(table.c.referral_id.in_(list(referral_ids)))
        if patient:
            same = [referrals.c.patient == patient]
            if patient_servers:
                same.append(from_servers(referrals.c.source_key, patient_servers))
            where.append(table.c.referral_id.in_(sa.select(referrals.c.id).where(*same)))
        if sources is not None:
            where.append(table.c.referral_id.in_(sa.select(referrals.c.id).where(
                from_sources(referrals.c.source_key, sources))))
        return self._select(where, limit=limit)

    def count_open(self) -> int:
        with self.db.read() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(table)
                                 .where(table.c.status == OPEN)).scalar_one())

    def _select(self, where: list[Any], *, order: list[Any] | None = None,
                limit: int | None = None, conn: Connection | None = None
                ) -> list[CoordinatorTask]:
        query = sa.select(table).where(*where).order_by(*(order or [
            table.c.due_at.is_(None), table.c.due_at, table.c.created_at, table.c.id]))
        if limit is not None:
            query = query.limit(limit)
        if conn is not None:
            return [_task(r) for r in conn.execute(query).mappings()]
        with self.db.read() as c:
            return [_task(r) for r in c.execute(query).mappings()]

    def _locked(self, c: Connection, task_id: str) -> CoordinatorTask:
        query = sa.select(table).where(table.c.id == task_id)
        if self.db.dialect == "postgresql":
            query = query.with_for_update()
        row = c.execute(query).mappings().first()
        if row is None:
            raise NotFound(f"no coordinator task {task_id}")
        return _task(row)

    def _close(self, c: Connection, task: CoordinatorTask, status: str, who: Actor, note: str,
               outcome: str | None) -> CoordinatorTask:
        closed = _now()
        c.execute(table.update().where(table.c.id == task.id).values(
            status=status, outcome=outcome, actor=who.reference, actor_display=who.display,
            note=note[:2000], closed_at=closed))
        return CoordinatorTask(**{**task.__dict__, "status": status, "outcome": outcome,
                                  "actor": who.reference, "actor_display": who.display,
                                  "note": note[:2000], "closed_at": closed})


def _outcome_payload(task: CoordinatorTask) -> dict[str, Any]:
    return {"task_id": task.id, "referral_id": task.referral_id, "kind": task.kind,
            "outcome": task.outcome, "note": task.note, "actor": task.actor,
            "actor_display": task.actor_display, "data": task.data}


def _actor(actor: ActorLike) -> Actor:
    return actor if isinstance(actor, Actor) else Actor(actor, "", "human")


def _task(row: Any) -> CoordinatorTask:
    return CoordinatorTask(
        id=row["id"], key=row["key"], referral_id=row["referral_id"], kind=row["kind"],
        reason=row["reason"], status=row["status"], due_at=row["due_at"],
        outcomes=tuple(row["outcomes"] or ()), on_outcome=row["on_outcome"],
        created_at=row["created_at"], data=dict(row["data"] or {}), outcome=row["outcome"],
        actor=row["actor"], actor_display=row["actor_display"], note=row["note"],
        closed_at=row["closed_at"])


def _now() -> datetime:
    return datetime.now(UTC)
