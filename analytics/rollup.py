"""The incremental rollup: it reads the event log from where it stopped, recomputes the facts of
every referral that has new events (from that referral's whole history), and moves the cube by
the difference. `rebuild()` recomputes everything from the event log.

Where it stopped is a cursor (`cursors` table, "analytics.rollup"): the highest event id below
which every id was read (`w`), the highest id read (`s`), and the ids missing between them with
when they were first missed. On PostgreSQL a transaction can commit an event whose id is lower
than one already committed, so a missing id is waited for (it may be a transaction still
running) for `GAP_SECONDS`, then taken for a rolled-back one; reading a referral again is
harmless, because its facts are recomputed from its whole history every time.

A run computes outside the write transaction and writes only if the cursor is still where it
read it (another node's run, or a rebuild, makes it give up), so runs never double-count.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from analytics.contribution import Contribution, CubeCell, CubeKey
from analytics.facts import Facts, facts_from
from analytics.tables import COUNT_COLUMNS, analytics_cube, analytics_dropoff, analytics_facts
from referrals.codec import referral_from_dict
from referrals.model import Actor, Event, Reason, Stage
from referrals.store.database import Database
from referrals.store.schema import cursors, referral_events, referrals

CURSOR = "analytics.rollup"
GAP_SECONDS = 60.0
#: PostgreSQL advisory lock key of rollup writes ("refloop analytics")
LOCK = 0x72666C616E6C79
CHUNK = 500
EVENT_COLUMNS = (referral_events.c.referral_id, referral_events.c.seq, referral_events.c.action,
                 referral_events.c.from_stage, referral_events.c.to_stage,
                 referral_events.c.actor, referral_events.c.at, referral_events.c.reason_code,
                 referral_events.c.data)


@dataclass
class Position:
    """Where the rollup stopped in the event log (see the module docstring)."""

    below: int = 0
    seen: int = 0
    gaps: dict[int, str] | None = None
    rebuilding: bool = False

    @classmethod
    def parse(cls, text: str | None) -> Position:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(int(data.get("w", 0)), int(data.get("s", 0)),
                   {int(k): v for k, v in (data.get("gaps") or {}).items()},
                   bool(data.get("rebuilding", False)))

    def dump(self) -> str:
        return json.dumps({"w": self.below, "s": self.seen, "gaps": self.gaps or {},
                           **({"rebuilding": True} if self.rebuilding else {})},
                          sort_keys=True)


class Rollup:
    def __init__(self, db: Database, *, clock: Callable[[], datetime] | None = None) -> None:
        self.db = db
        self.clock = clock or (lambda: datetime.now(UTC))

    # -- incremental ---------------------------------------------------------------------------
    def catch_up(self, *, limit: int = 2000, rounds: int = 50) -> int:
        """Read up to `rounds` batches of new events; returns how many events were read."""
        done = 0
        for _ in range(rounds):
            read, more = self.step(limit)
            done += read
            if not more:
                break
        return done

    def step(self, limit: int = 2000) -> tuple[int, bool]:
        """One batch: (events read, whether more may be waiting)."""
        with self.db.read() as c:
            raw = _cursor_text(c)
            position = Position.parse(raw)
            if position.rebuilding:
                return 0, False
            rows = c.execute(sa.select(referral_events.c.id, referral_events.c.referral_id)
                             .where(referral_events.c.id > position.below)
                             .order_by(referral_events.c.id).limit(limit)).all()
            moved, touched = self._advance(position, rows)
            old = _read_facts(c, touched)
            new = _compute_facts(c, touched)
        if not touched and moved.dump() == position.dump():
            return 0, False
        delta = Contribution()
        for referral_id in touched:
            if referral_id in old:
                delta.add(old[referral_id], -1)
            if referral_id in new:
                delta.add(new[referral_id])
        with self.db.write() as c:
            self._lock(c)
            if _cursor_text(c) != raw:
                return 0, False  # another run (or a rebuild) moved it first
            _write_facts(c, touched, new)
            apply(c, delta)
            _set_cursor(c, moved.dump())
        return len(rows), len(rows) == limit

    def _advance(self, position: Position, rows: Sequence[Any]) -> tuple[Position, set[str]]:
        now = self.clock()
        gaps = dict(position.gaps or {})
        present = {int(r.id) for r in rows}
        touched = {r.referral_id for r in rows
                   if int(r.id) > position.seen or int(r.id) in gaps}
        for filled in present & set(gaps):
            del gaps[filled]
        top = max(present, default=position.below)
        previous = position.seen  # ids up to here were judged before: missing or waited for
        for event_id in sorted(i for i in present if i > position.seen):
            for missing in range(previous + 1, min(event_id, previous + 1 + 10_000)):
                gaps[missing] = now.isoformat()
            previous = event_id
        cutoff = now - timedelta(seconds=GAP_SECONDS)
        gaps = {k: v for k, v in gaps.items() if datetime.fromisoformat(v) > cutoff and k < top}
        below = min(gaps) - 1 if gaps else max(top, position.below)
        return Position(below, max(position.seen, top), gaps), touched

    def _lock(self, c: Connection) -> None:
        if self.db.dialect == "postgresql":
            c.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK})

    # -- from scratch --------------------------------------------------------------------------
    def rebuild(self, progress: Callable[[int], None] | None = None) -> int:
        """Recompute every referral's facts and the cube from the event log; returns the
        number of referrals. The incremental rollup waits while this runs."""
        with self.db.write() as c:
            self._lock(c)
            top = int(c.execute(sa.select(sa.func.coalesce(sa.func.max(referral_events.c.id),
                                                           0))).scalar_one())
            for table in (analytics_facts, analytics_cube, analytics_dropoff):
                c.execute(table.delete())
            _set_cursor(c, Position(top, top, {}, rebuilding=True).dump())
        cube = Contribution()
        count = 0
        for ids in _referral_pages(self.db):  # short transactions: SQLite's WAL can checkpoint
            with self.db.read() as c:
                facts = [f for f in _compute_facts(c, ids, top).values() if f.last_seq]
            with self.db.write() as c:
                insert(c, analytics_facts, [f.to_row() for f in facts])
            for item in facts:
                cube.add(item)
            count += len(facts)
            if progress is not None:
                progress(len(ids))
        with self.db.write() as c:
            self._lock(c)
            apply(c, cube, empty=True)
            _set_cursor(c, Position(top, top, {}).dump())
        return count

    def position(self) -> Position:
        with self.db.read() as c:
            return Position.parse(_cursor_text(c))


# -- reading ---------------------------------------------------------------------------------

def _cursor_text(c: Connection) -> str | None:
    return c.execute(sa.select(cursors.c.value).where(cursors.c.name == CURSOR)).scalar()


def _set_cursor(c: Connection, value: str) -> None:
    now = datetime.now(UTC)
    if not c.execute(cursors.update().where(cursors.c.name == CURSOR)
                     .values(value=value, updated_at=now)).rowcount:
        c.execute(cursors.insert().values(name=CURSOR, value=value, updated_at=now))


def _read_facts(c: Connection, ids: Iterable[str]) -> dict[str, Facts]:
    found: dict[str, Facts] = {}
    for chunk in _chunks(sorted(ids)):
        for row in c.execute(sa.select(analytics_facts)
                             .where(analytics_facts.c.referral_id.in_(chunk))).mappings():
            found[row["referral_id"]] = Facts.from_row(row)
    return found


def _compute_facts(c: Connection, ids: Iterable[str], top: int | None = None
                   ) -> dict[str, Facts]:
    """The facts of referrals `ids` from their events (`top`: the events up to that id)."""
    found: dict[str, Facts] = {}
    below = [] if top is None else [referral_events.c.id <= top]
    for chunk in _chunks(sorted(ids)):
        states = {row.id: referral_from_dict(row.state) for row in c.execute(
            sa.select(referrals.c.id, referrals.c.state).where(referrals.c.id.in_(chunk)))}
        events: dict[str, list[Event]] = {}
        for row in c.execute(sa.select(*EVENT_COLUMNS)
                             .where(referral_events.c.referral_id.in_(chunk), *below)
                             .order_by(referral_events.c.referral_id, referral_events.c.seq)):
            events.setdefault(row.referral_id, []).append(event_of(row))
        for referral_id, referral in states.items():
            found[referral_id] = facts_from(referral, events.get(referral_id, []))
    return found


def _referral_pages(db: Database) -> Iterator[list[str]]:
    """Every referral id, `CHUNK` at a time in id order, each page read on its own."""
    last = ""
    while True:
        with db.read() as c:
            ids = list(c.execute(sa.select(referrals.c.id).where(referrals.c.id > last)
                                 .order_by(referrals.c.id).limit(CHUNK)).scalars())
        if not ids:
            return
        yield ids
        last = ids[-1]


_STAGES = {stage.value: stage for stage in Stage}


def event_of(row: Any) -> Event:
    """An event as the facts need it (no Provenance, no source)."""
    at = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)
    return Event(referral_id=row.referral_id, seq=row.seq, action=row.action,
                 from_stage=_STAGES[row.from_stage] if row.from_stage else None,
                 to_stage=_STAGES[row.to_stage], actor=Actor(row.actor), at=at,
                 reason=Reason(row.reason_code) if row.reason_code else None,
                 data=row.data or {})


# -- writing ---------------------------------------------------------------------------------

def _write_facts(c: Connection, ids: Iterable[str], new: dict[str, Facts]) -> None:
    for chunk in _chunks(sorted(ids)):
        c.execute(analytics_facts.delete().where(analytics_facts.c.referral_id.in_(chunk)))
    rows = [facts.to_row() for facts in new.values()]
    if rows:
        insert(c, analytics_facts, rows)


def apply(c: Connection, delta: Contribution, *, empty: bool = False) -> None:
    """Add `delta` to the cube and the drop-off counts (read, add, write: the caller holds the
    rollup's lock). `empty`: the tables are known to be empty (a rebuild): insert only."""
    cube = analytics_cube.c
    for chunk in _chunks(list(delta.cube), 300):
        existing = {} if empty else {(r.grain, r.dim, r.value, r.period): r for r in c.execute(
            sa.select(analytics_cube).where(sa.tuple_(cube.grain, cube.dim, cube.value,
                                                      cube.period).in_(chunk)))}
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for key in chunk:
            cell = _cell_of_row(existing[key]) if key in existing else CubeCell()
            change = delta.cube[key]
            cell.add(change.counts, change.histograms)
            row = _row_of_cell(key, cell)
            if key in existing:
                updates.append({**{f"k_{name}": row[name] for name in KEY_NAMES[:4]}, **row})
            else:
                inserts.append(row)
        if inserts:
            insert(c, analytics_cube, inserts)
        if updates:
            c.execute(_UPDATE_CUBE, updates)
    drop = analytics_dropoff.c
    for chunk in _chunks([k for k, n in delta.dropoff.items() if n], 300):
        existing_n = {} if empty else {tuple(r[:7]): int(r.n) for r in c.execute(
            sa.select(drop.grain, drop.dim, drop.value, drop.period, drop.step, drop.outcome,
                      drop.reason, drop.n)
            .where(sa.tuple_(drop.grain, drop.dim, drop.value, drop.period, drop.step,
                             drop.outcome, drop.reason).in_(chunk)))}
        fresh = [{**dict(zip(KEY_NAMES, key, strict=True)), "n": delta.dropoff[key]}
                 for key in chunk if key not in existing_n]
        moved = [{**{f"k_{name}": v for name, v in zip(KEY_NAMES, key, strict=True)},
                  "n": existing_n[key] + delta.dropoff[key]} for key in chunk if key in existing_n]
        if fresh:
            insert(c, analytics_dropoff, fresh)
        if moved:
            c.execute(_UPDATE_DROPOFF, moved)


def insert(c: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert `rows` (all with the same keys): PostgreSQL's COPY in the connection's
    transaction (a rebuild writes millions of rows), an INSERT per row elsewhere."""
    if not rows:
        return
    if c.dialect.name != "postgresql":
        c.execute(table.insert(), rows)
        return
    names = list(rows[0])
    json_columns = {name for name in names if isinstance(table.c[name].type, sa.JSON)}
    cursor = c.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {table.name} ({', '.join(names)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([json.dumps(row[name]) if name in json_columns else row[name]
                            for name in names])


KEY_NAMES = ("grain", "dim", "value", "period", "step", "outcome", "reason")
_UPDATE_CUBE = analytics_cube.update().where(
    *(analytics_cube.c[name] == sa.bindparam(f"k_{name}") for name in KEY_NAMES[:4]))
_UPDATE_DROPOFF = analytics_dropoff.update().where(
    *(analytics_dropoff.c[name] == sa.bindparam(f"k_{name}") for name in KEY_NAMES)
).values(n=sa.bindparam("n"))


def _cell_of_row(row: Any) -> CubeCell:
    return CubeCell([int(getattr(row, name)) for name in COUNT_COLUMNS],
                    {name: {int(k): int(v) for k, v in bins.items()}
                     for name, bins in (row.histograms or {}).items()})


def _row_of_cell(key: CubeKey, cell: CubeCell) -> dict[str, Any]:
    grain, dim, value, period = key
    return {"grain": grain, "dim": dim, "value": value, "period": period,
            **dict(zip(COUNT_COLUMNS, cell.counts, strict=True)),
            "histograms": {name: {str(k): v for k, v in sorted(bins.items())}
                           for name, bins in sorted(cell.histograms.items()) if bins}}


def _chunks(items: list[Any], size: int = CHUNK) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
