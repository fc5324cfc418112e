"""Many-row statements for batch writers, through the driver's executemany.

SQLAlchemy's executemany prepares every row's parameters through its general machinery; for the
wide rows of the hot tables (referrals, events, resources, their versions) that costs more than
the database's own work. A `Bulk` statement is compiled once per dialect, keeps the columns' bind
processors (JSON serialisation, UTC timestamps, booleans: the same ones SQLAlchemy would apply)
and hands the driver plain tuples (or dicts, for named paramstyles).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

Processor = Callable[[Any], Any] | None


Statement = sa.Insert | sa.Update


class Processed:
    """A value already in the driver's form (`Bulk.process`): one value written to several
    rows or statements (a resource body and its version, a batch's timestamp) is processed
    once."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class Bulk:
    """`statement` (or, for dialect-specific constructs such as ON CONFLICT, a function of the
    dialect's name that builds it) with every value a bound parameter."""

    def __init__(self, statement: Statement | Callable[[str], Statement]) -> None:
        self.statement = statement
        #: id(dialect) -> (SQL, positional, [(parameter name, processor)])
        self._compiled: dict[int, tuple[str, bool, list[tuple[str, Processor]]]] = {}

    def _compile(self, dialect: sa.Dialect) -> tuple[str, bool, list[tuple[str, Processor]]]:
        found = self._compiled.get(id(dialect))
        if found is None:
            statement = self.statement if isinstance(self.statement, (sa.Insert, sa.Update)) \
                else self.statement(dialect.name)
            compiled = statement.compile(dialect=dialect)
            names: Sequence[str] = (compiled.positiontup or []) if compiled.positional \
                else list(compiled.binds)
            params: list[tuple[str, Processor]] = [
                (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
                for name in names]
            made = (str(compiled), compiled.positional, params)
            self._compiled[id(dialect)] = made
            return made
        return found

    def process(self, conn: Connection, name: str, value: Any) -> Processed:
        """`value` as parameter `name` will be written, to be passed in several rows."""
        processor = dict(self._compile(conn.dialect)[2])[name]
        return Processed(processor(value) if processor else value)

    def run(self, conn: Connection, rows: list[dict[str, Any]]) -> int:
        """Execute for every row (dicts keyed by parameter name, values plain or Processed);
        the affected row count."""
        if not rows:
            return 0
        sql, positional, params = self._compile(conn.dialect)
        if positional:
            values: list[Any] = [tuple([v.value if type(v := row[n]) is Processed
                                        else p(v) if p else v for n, p in params])
                                 for row in rows]
        else:
            values = [{n: v.value if type(v := row[n]) is Processed else p(v) if p else v
                       for n, p in params} for row in rows]
        return int(conn.exec_driver_sql(sql, values).rowcount)
