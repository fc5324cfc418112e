"""Referrals and their append-only event log, with optimistic concurrency."""

from __future__ import annotations

import base64
import builtins
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from referrals.codec import referral_from_dict, referral_to_dict
from referrals.errors import ConflictError, NotFound
from referrals.ids import SHORT
from referrals.lifecycle import Transition
from referrals.model import Actor, Event, Reason, Referral, Stage, source_key_prefixes
from referrals.store.bulk import Bulk
from referrals.store.database import Database
from referrals.store.schema import referral_events, referrals
from referrals.task import bser_code, task_status, to_provenance, to_task

# Statements are built once with bound parameters: SQLAlchemy then compiles each once and caches
# it (building `.values(**row)` or a fresh `where()` each time costs more than the write).
_UPDATE = referrals.update().where(referrals.c.id == sa.bindparam("match_id"),
                                   referrals.c.version == sa.bindparam("match_version"))
_INSERT = referrals.insert()
_INSERT_EVENT = referral_events.insert()
#: A new referral, or nothing when its id or source_key exists (RETURNING tells which; the
#: rowcount of an INSERT is not reliable across drivers).
_INSERT_NEW = {
    "postgresql": postgresql.insert(referrals).on_conflict_do_nothing()
    .returning(referrals.c.version),
    "sqlite": sqlite.insert(referrals).on_conflict_do_nothing().returning(referrals.c.version),
}
_ROW_PARAMS = {c.name: sa.bindparam(f"r_{c.name}", type_=c.type) for c in referrals.c}
_EVENT_COLUMNS = [c for c in referral_events.c if c.name not in ("id", "referral_id")]


def _then_event(write: Any) -> sa.Insert:
    """PostgreSQL: `write` (returning the referral id) and its event row in one statement.

    A data-modifying CTE feeds the event INSERT, so the event is written exactly when the
    referral row was: the statement returns a row then, and none on conflict.
    """
    written = write.cte("written")
    rows = sa.select(written.c.id, *[sa.bindparam(f"e_{c.name}", type_=c.type)
                                     for c in _EVENT_COLUMNS])
    return (referral_events.insert()
            .from_select(["referral_id", *[c.name for c in _EVENT_COLUMNS]], rows)
            .returning(referral_events.c.seq))


_PG_INSERT_NEW_WITH_EVENT = _then_event(
    postgresql.insert(referrals).values(_ROW_PARAMS).on_conflict_do_nothing()
    .returning(referrals.c.id))
_PG_UPDATE_WITH_EVENT = _then_event(
    referrals.update().where(referrals.c.id == sa.bindparam("match_id"),
                             referrals.c.version == sa.bindparam("match_version"))
    .values({k: v for k, v in _ROW_PARAMS.items() if k != "id"}).returning(referrals.c.id))
#: the batch writes (write_many), through the driver's executemany (store/bulk.py)
_BULK_INSERT = Bulk(referrals.insert())
_BULK_UPDATE = Bulk(referrals.update().where(
    referrals.c.id == sa.bindparam("match_id"),
    referrals.c.version == sa.bindparam("match_version"),
).values({c.name: sa.bindparam(f"v_{c.name}", type_=c.type) for c in referrals.c
          if c.name != "id"}))
_BULK_INSERT_EVENT = Bulk(referral_events.insert().values(
    {c.name: sa.bindparam(c.name, type_=c.type) for c in referral_events.c if c.name != "id"}))
_STATE_BY_ID = sa.select(referrals.c.state).where(referrals.c.id == sa.bindparam("key"))
_STATE_BY_ID_LOCKED = _STATE_BY_ID.with_for_update()
_STATE_BY_SOURCE = sa.select(referrals.c.state).where(
    referrals.c.source_key == sa.bindparam("key"))
_STATE_BY_SERVICE_REQUEST = sa.select(referrals.c.state).where(
    referrals.c.service_request == sa.bindparam("key"))


class ReferralStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def save(self, change: Transition, conn: Connection | None = None) -> Referral:
        """Insert (version 1) or update the referral, append its event; raise ConflictError."""
        referral = change.referral
        row = _row(referral)
        with self.db.using(conn) as c:
            if referral.version == 1:
                try:
                    with c.begin_nested():
                        c.execute(_INSERT, row)
                except sa.exc.IntegrityError as exc:
                    raise ConflictError(f"referral {referral.source_key}", 0, 1) from exc
            elif self.db.dialect == "postgresql":
                params = _params(row, change.event, referral)
                params.update(match_id=referral.id, match_version=referral.version - 1)
                if c.execute(_PG_UPDATE_WITH_EVENT, params).first() is None:
                    self._conflict(referral, c)
                return referral
            else:
                del row["id"]
                result = c.execute(_UPDATE, {**row, "match_id": referral.id,
                                             "match_version": referral.version - 1})
                if result.rowcount != 1:
                    self._conflict(referral, c)
            c.execute(_INSERT_EVENT, _event_row(referral, change.event))
        return referral

    def _conflict(self, referral: Referral, conn: Connection) -> None:
        found = conn.execute(sa.select(referrals.c.version)
                             .where(referrals.c.id == referral.id)).scalar()
        raise ConflictError(f"referral {referral.id}", referral.version - 1, found)

    def try_insert(self, change: Transition, conn: Connection) -> bool:
        """Insert a new referral (version 1) and its first event, in `conn`'s transaction.

        False, with nothing written, when a referral with its id or source_key exists (a
        concurrent insert of the same key is waited for). No savepoint and no prior read: one
        statement decides.
        """
        referral = change.referral
        if self.db.dialect == "postgresql":
            params = _params(_row(referral), change.event, referral)
            return conn.execute(_PG_INSERT_NEW_WITH_EVENT, params).first() is not None
        inserted = conn.execute(_INSERT_NEW[self.db.dialect], _row(referral)).first() is not None
        if inserted:
            conn.execute(_INSERT_EVENT, _event_row(referral, change.event))
        return inserted

    def get(self, referral_id: str, conn: Connection | None = None, *,
            lock: bool = False) -> Referral:
        """The referral; with `lock` (inside `conn`'s transaction) other writers wait for us."""
        found = self._one(_STATE_BY_ID_LOCKED if lock and conn is not None else _STATE_BY_ID,
                          referral_id, conn)
        if found is None:
            raise NotFound(f"no referral {referral_id}")
        return found

    def try_get(self, referral_id: str, conn: Connection | None = None) -> Referral | None:
        return self._one(_STATE_BY_ID, referral_id, conn)

    def try_get_by_source(self, source_key: str, conn: Connection | None = None
                          ) -> Referral | None:
        return self._one(_STATE_BY_SOURCE, source_key, conn)

    def try_get_by_service_request(self, reference: str, conn: Connection | None = None
                                   ) -> Referral | None:
        return self._one(_STATE_BY_SERVICE_REQUEST, reference, conn)

    def unmatched_sources(self, sources: Iterable[str]) -> list[str]:
        """The referral sources (a tenant's source-key prefixes) that no referral came from. One
        probe of the source_key index per source: the keys from `<source>|` to `<source>}` ('}'
        follows '|'), then the exact test. That range holds every key with the prefix only in
        code-point order: SQLite's, and PostgreSQL's under the C collations; under another
        (en_US.UTF-8, say) the range is compared in the C collation, exact but without the
        index (a scan that stops at the first match)."""
        missing = []
        with self.db.read() as conn:
            column: sa.ColumnElement[str] = referrals.c.source_key
            if not _orders_by_code_point(conn):
                column = column.collate("C")
            for source in sources:
                found = conn.execute(sa.select(referrals.c.id).where(
                    column >= source + "|", column < source + "}",
                    begins_with(referrals.c.source_key, source + "|")).limit(1)).first()
                if found is None:
                    missing.append(source)
        return missing

    # --- batches (referrals/batch.py) -----------------------------------------------------------

    def get_many(self, referral_ids: Iterable[str], conn: Connection, *, lock: bool = False
                 ) -> dict[str, Referral]:
        """The referrals among `referral_ids`, in one query; with `lock`, other writers wait for
        us (FOR UPDATE on PostgreSQL, rows taken in id order so batches cannot deadlock)."""
        wanted = sorted(set(referral_ids))
        if not wanted:
            return {}
        query = sa.select(referrals.c.state).where(referrals.c.id.in_(wanted)) \
            .order_by(referrals.c.id)
        if lock and self.db.dialect == "postgresql":
            query = query.with_for_update()
        found = (referral_from_dict(state) for state in conn.execute(query).scalars())
        return {referral.id: referral for referral in found}

    def ids_by_source(self, source_keys: Iterable[str], conn: Connection) -> dict[str, str]:
        """source key -> referral id for the keys that exist, in one query."""
        wanted = sorted(set(source_keys))
        if not wanted:
            return {}
        return {str(k): str(i) for k, i in conn.execute(
            sa.select(referrals.c.source_key, referrals.c.id)
            .where(referrals.c.source_key.in_(wanted)))}

    def write_many(self, new: list[Referral], changed: list[tuple[Referral, int]],
                   events: list[tuple[Referral, Event]], conn: Connection) -> None:
        """Insert `new` referrals, update `changed` ones (referral, version stored now: a lost
        race raises ConflictError) and append `events` (each with the referral as that event
        left it), one executemany per statement."""
        if new:
            try:
                _BULK_INSERT.run(conn, [_row(r) for r in new])
            except sa.exc.IntegrityError as exc:
                raise ConflictError(f"{len(new)} new referrals", 0, 1) from exc
        if changed:
            rows = []
            for referral, stored_version in changed:
                row = {f"v_{k}": v for k, v in _row(referral).items() if k != "id"}
                rows.append({**row, "match_id": referral.id, "match_version": stored_version})
            if _BULK_UPDATE.run(conn, rows) != len(rows):
                raise ConflictError(f"one of {len(rows)} referrals", 0, None)
        if events:
            _BULK_INSERT_EVENT.run(conn, [_event_row(r, e) for r, e in events])

    def ids_starting_with(self, prefix: str, limit: int = 5) -> builtins.list[str]:
        """Referral ids that begin with `prefix` (at most `limit`, in id order): the short ids
        people copy from a listing. Ids hold only hex digits and hyphens, so anything else
        matches nothing."""
        if not prefix or not set(prefix.lower()) <= set("0123456789abcdef-"):
            return []
        low = prefix.lower()
        query = (sa.select(referrals.c.id).where(referrals.c.id.startswith(low, autoescape=True))
                 .order_by(referrals.c.id).limit(limit))
        with self.db.read() as c:
            return [str(i) for i in c.execute(query).scalars() if str(i).startswith(low)]

    def ids_ending_with(self, short: str, limit: int = 5) -> builtins.list[str]:
        """Referral ids that end with `short` (at least a whole short id, referrals/ids.py: the
        last 8 characters, which listings show; anything shorter matches nothing), at most
        `limit`, in id order.

        This reads every referral id (the key's index, not the table): 0.09 second at 1.3
        million referrals on SQLite, 0.19 second on PostgreSQL. An index on the short id would
        be keyed by random values and cost every new referral a page write of its own once it
        outgrew memory, which is what time-ordered ids are for; a full id, or any beginning of
        one, uses the key."""
        low = short.lower()
        if len(low) < SHORT or not set(low) <= set("0123456789abcdef-"):
            return []
        query = (sa.select(referrals.c.id).where(referrals.c.id.endswith(low, autoescape=True))
                 .order_by(referrals.c.id).limit(limit))
        with self.db.read() as c:
            return [str(i) for i in c.execute(query).scalars() if str(i).endswith(low)]

    def task(self, referral_id: str) -> dict[str, Any] | None:
        with self.db.read() as c:
            return c.execute(sa.select(referrals.c.task)
                             .where(referrals.c.id == referral_id)).scalar()

    def events(self, referral_id: str, conn: Connection | None = None) -> list[Event]:
        query = (sa.select(referral_events).where(referral_events.c.referral_id == referral_id)
                 .order_by(referral_events.c.seq))
        if conn is not None:
            rows = conn.execute(query).mappings().all()
        else:
            with self.db.read() as c:
                rows = c.execute(query).mappings().all()
        return [_event_from_row(r) for r in rows]

    def provenance(self, referral_id: str) -> list[dict[str, Any]]:
        with self.db.read() as c:
            return list(c.execute(
                sa.select(referral_events.c.provenance)
                .where(referral_events.c.referral_id == referral_id)
                .order_by(referral_events.c.seq)).scalars())

    def list(self, *, stage: str | None = None, limit: int = 100, offset: int = 0,
             where: Sequence[sa.ColumnElement[bool]] = ()) -> list[Referral]:
        query = sa.select(referrals.c.state).order_by(referrals.c.updated_at.desc(),
                                                      referrals.c.id)
        if stage:
            query = query.where(referrals.c.stage == stage)
        for clause in where:
            query = query.where(clause)
        with self.db.read() as c:
            return [referral_from_dict(s) for s in
                    c.execute(query.limit(limit).offset(offset)).scalars()]

    def page(self, *, stage: str | None = None, limit: int = 50, after: str | None = None
             ) -> tuple[builtins.list[Referral], str | None]:
        """One page, newest change first, and the cursor of the next page (None: this was the
        last). `after` is a previous page's cursor; pages never skip or repeat a referral that
        does not change in between (keyset on updated_at, id)."""
        query = sa.select(referrals.c.state).order_by(referrals.c.updated_at.desc(),
                                                      referrals.c.id)
        if stage:
            query = query.where(referrals.c.stage == stage)
        if after:
            moment, last_id = parse_cursor(after)
            query = query.where(sa.or_(referrals.c.updated_at < moment,
                                       sa.and_(referrals.c.updated_at == moment,
                                               referrals.c.id > last_id)))
        with self.db.read() as c:
            found = [referral_from_dict(s) for s in
                     c.execute(query.limit(max(1, limit) + 1)).scalars()]
        more = len(found) > max(1, limit)
        found = found[:max(1, limit)]
        return found, build_cursor(found[-1]) if more else None

    def count_by_stage(self) -> dict[str, int]:
        with self.db.read() as c:
            rows = c.execute(sa.select(referrals.c.stage, sa.func.count())
                             .group_by(referrals.c.stage)).all()
        return {stage: count for stage, count in rows}

    def count_events_by_action(self) -> dict[str, int]:
        """How many referrals ever took each action (the funnel reads this)."""
        with self.db.read() as c:
            rows = c.execute(sa.select(referral_events.c.action,
                                       sa.func.count(sa.distinct(referral_events.c.referral_id)))
                             .group_by(referral_events.c.action)).all()
        return {action: count for action, count in rows}

    def _one(self, query: sa.Select[Any], key: str, conn: Connection | None
             ) -> Referral | None:
        if conn is not None:
            state = conn.execute(query, {"key": key}).scalar()
        else:
            with self.db.read() as c:
                state = c.execute(query, {"key": key}).scalar()
        return referral_from_dict(state) if state else None


def build_cursor(referral: Referral) -> str:
    """An opaque page cursor: where the page after `referral` starts."""
    raw = f"{referral.updated_at.astimezone(UTC).isoformat()}|{referral.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def parse_cursor(cursor: str) -> tuple[datetime, str]:
    """(updated_at, id) of a cursor from build_cursor; ValueError when it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, _, referral_id = raw.partition("|")
        parsed = datetime.fromisoformat(moment)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a page cursor: {cursor!r}") from exc
    if not referral_id or parsed.tzinfo is None:
        raise ValueError(f"not a page cursor: {cursor!r}")
    return parsed, referral_id


def _row(referral: Referral) -> dict[str, Any]:
    return {
        "id": referral.id, "source_key": referral.source_key, "stage": referral.stage.value,
        "task_status": task_status(referral), "business_status": bser_code(referral),
        "priority": referral.priority, "patient": referral.patient, "owner": referral.owner,
        "service_request": referral.service_request, "specialty": referral.specialty,
        "payer": referral.payer, "auth_state": referral.auth_state,
        "deadline": referral.deadline, "created_at": referral.created_at,
        "updated_at": referral.updated_at, "version": referral.version,
        "state": referral_to_dict(referral), "task": to_task(referral),
    }


def _params(row: dict[str, Any], event: Event, referral: Referral) -> dict[str, Any]:
    """Parameters of the one-statement PostgreSQL writes (`r_` row, `e_` event)."""
    params = {f"r_{k}": v for k, v in row.items()}
    params.update((f"e_{k}", v) for k, v in _event_row(referral, event).items()
                  if k != "referral_id")
    return params


def _event_row(referral: Referral, event: Event) -> dict[str, Any]:
    return {
        "referral_id": event.referral_id, "seq": event.seq, "action": event.action,
        "from_stage": event.from_stage.value if event.from_stage else None,
        "to_stage": event.to_stage.value, "actor": event.actor.reference,
        "actor_display": event.actor.display, "at": event.at,
        "reason_code": event.reason.code if event.reason else None,
        "reason_text": event.reason.text if event.reason else None,
        "source": event.source, "source_message": event.source_message, "data": event.data,
        "provenance": to_provenance(referral, event),
    }


def _event_from_row(row: Any) -> Event:
    at = row["at"]
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return Event(
        referral_id=row["referral_id"], seq=row["seq"], action=row["action"],
        from_stage=Stage(row["from_stage"]) if row["from_stage"] else None,
        to_stage=Stage(row["to_stage"]),
        actor=Actor(row["actor"], row["actor_display"],
                    "human" if row["actor"].startswith(("Practitioner", "PractitionerRole"))
                    else "system"),
        at=at, reason=Reason(row["reason_code"], row["reason_text"] or "")
        if row["reason_code"] else None,
        source=row["source"], source_message=row["source_message"], data=row["data"] or {},
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


def from_servers(source_key: sa.ColumnElement[str],
                 servers: tuple[str, ...]) -> sa.ColumnElement[bool]:
    """Referrals whose source key says they came from one of these FHIR servers."""
    return sa.or_(*(begins_with(source_key, prefix) for prefix in source_key_prefixes(servers)))


def from_sources(source_key: sa.ColumnElement[str],
                 sources: tuple[str, ...]) -> sa.ColumnElement[bool]:
    """Referrals of these referral sources (a tenant's: source-key prefixes such as
    `fhir|https://ehr/fhir` or `hl7|CLINIC`, matched up to the next `|`); none when empty."""
    return sa.or_(sa.false(), *(begins_with(source_key, source + "|") for source in sources))


#: PostgreSQL collations that order text by code point (as the index of source keys then does)
CODE_POINT_COLLATIONS = frozenset({"C", "POSIX", "C.UTF-8", "C.utf8", "ucs_basic"})


def _orders_by_code_point(conn: Connection) -> bool:
    if conn.dialect.name != "postgresql":
        return True
    collation = conn.execute(sa.text("SELECT datcollate FROM pg_database WHERE datname = "
                                     "current_database()")).scalar()
    return collation in CODE_POINT_COLLATIONS


def begins_with(column: sa.ColumnElement[str], prefix: str) -> sa.ColumnElement[bool]:
    """`column` begins with `prefix`, case and all. SQLite's LIKE ignores ASCII case, so the
    LIKE alone would give `hl7|north` the referrals of `hl7|NORTH`: there the same characters
    are compared exactly too. PostgreSQL's LIKE is exact already, and an extra condition there
    misleads its planner (a tenant's worklist page took 3.4 times the unlimited one's)."""
    return sa.and_(column.startswith(prefix, autoescape=True),
                   _SameStart(column, sa.literal(len(prefix)), sa.literal(prefix)))


class _SameStart(FunctionElement[bool]):
    """`substr(column, 1, length) = prefix` on SQLite; true elsewhere (see begins_with)."""

    type = sa.Boolean()
    name = "same_start"
    inherit_cache = True


@compiles(_SameStart)
def _same_start_elsewhere(element: _SameStart, compiler: Any, **kw: Any) -> str:
    return "(1 = 1)"


@compiles(_SameStart, "sqlite")
def _same_start_sqlite(element: _SameStart, compiler: Any, **kw: Any) -> str:
    column, length, prefix = (compiler.process(c, **kw) for c in element.clauses)
    return f"(substr({column}, 1, {length}) = {prefix})"
