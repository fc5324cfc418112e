"""Engines and transactions for SQLite (WAL, BEGIN IMMEDIATE writers) and PostgreSQL."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DontWrapMixin

from referrals.errors import InboundError, RefloopError


class Database:
    """An engine plus the two kinds of transaction the core uses."""

    def __init__(self, engine: Engine, sqlite_synchronous: str = "FULL") -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.sqlite_synchronous = sqlite_synchronous.upper()

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def write(self, *, durable: bool = True) -> Iterator[Connection]:
        """A write transaction; SQLite takes the write lock at BEGIN (no upgrade deadlocks).

        `durable=False` is for writes that may be lost in a power cut without harm (a work
        queue's lease: a lost one leaves its items pending): on SQLite the commit does not wait
        for an fsync (WAL, synchronous=NORMAL), and the next durable commit syncs it with its
        own. Crashes of the process lose nothing either way."""
        with self.engine.connect() as conn:
            relaxed = self.is_sqlite and not durable and self.sqlite_synchronous != "NORMAL"
            if self.is_sqlite:
                conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            driver: Any = conn.connection.driver_connection  # outside any transaction
            if relaxed:
                driver.execute("PRAGMA synchronous=NORMAL")
            try:
                with conn.begin():
                    yield conn
            finally:
                if relaxed:
                    driver.execute(f"PRAGMA synchronous={self.sqlite_synchronous}")

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def using(self, conn: Connection | None) -> Iterator[Connection]:
        """Join the caller's transaction, or open a write transaction of our own."""
        if conn is not None:
            yield conn
            return
        with self.write() as own:
            yield own

    def checkpoint(self) -> None:
        """SQLite: copy what the write-ahead log holds into the database file now (PASSIVE: it
        never waits for or blocks a writer), so that a writer's own checkpoint at its commit
        finds little left to copy. For a thread beside the writer; nothing on PostgreSQL."""
        if self.is_sqlite:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def dispose(self) -> None:
        self.engine.dispose()


def sqlite_url(var_dir: Path) -> str:
    if not var_dir.exists():
        var_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(var_dir, 0o700)
    return f"sqlite:///{(var_dir / 'refloop.db').resolve()}"


def connect(url: str, *, sqlite_synchronous: str = "NORMAL", pool_size: int = 5) -> Database:
    """Open the store at `url`; SQLite gets WAL, a busy timeout and explicit BEGINs."""
    if url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgres://")
    elif url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    # hide_parameters: a database error's text (logged with its traceback) never carries the
    # statement's values, which hold patient references, free text and whole resources
    options: dict[str, Any] = {"json_serializer": dumps, "json_deserializer": loads,
                               "hide_parameters": True}
    try:
        if url.startswith("sqlite"):
            _create_private_sqlite(url)
            engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False},
                                      pool_size=pool_size, max_overflow=20, **options)
            _prepare_sqlite(engine, sqlite_synchronous)
        else:
            engine = sa.create_engine(url, pool_size=pool_size, max_overflow=20,
                                      pool_pre_ping=True, **options)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise RefloopError(f"cannot open the database {_safe(url)}: {exc}") from exc
    return Database(engine, sqlite_synchronous)


def _create_private_sqlite(url: str) -> None:
    """Create a missing SQLite database file readable by its owner only (0600): it holds
    patient data. SQLite gives its -wal and -shm files the same mode."""
    path = sa.engine.make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except (FileExistsError, FileNotFoundError):  # a missing directory: SQLite says so later
        return
    os.close(fd)


class UnstorableValue(InboundError, DontWrapMixin):
    """A value a JSON column cannot hold as given: refused, never written changed. Bad input
    (no retry helps), raised as is from a statement (DontWrapMixin), on both databases."""

    def __init__(self, why: str) -> None:
        super().__init__(f"the value cannot be stored as JSON: {why}", code="value")


def dumps(value: Any) -> str:
    """JSON columns are written with orjson (several times faster than the json module on
    resource bodies, task and provenance documents); dict keys that are not strings are
    written as strings, as the json module does (orjson's option for that is a slower path,
    taken only for a value that needs it). What orjson would write changed is refused
    (UnstorableValue): NaN and infinities (it writes null), keys that collide once written as
    strings (`{1: "a", "1": "b"}`: one would be lost); so are integers beyond 64 bits,
    unpaired surrogates and nesting deeper than 254 levels, which it cannot write at all."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = _with_non_string_keys(value).decode()
    if "null" in text and _holds_non_finite(value):
        raise UnstorableValue("a number is NaN or infinite, which JSON cannot hold")
    return text


def loads(text: str | bytes) -> Any:
    """A JSON column's value, read with orjson; a document it refuses is read by the json
    module, which wrote NaN and Infinity into SQLite stores before orjson wrote them."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _with_non_string_keys(value: Any) -> bytes:
    try:
        text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise UnstorableValue(str(exc)) from exc
    if _key_count(orjson.loads(text)) != _key_count(value):
        raise UnstorableValue("two keys of an object are the same once written as strings")
    return text


def _key_count(value: Any) -> int:
    if isinstance(value, dict):
        return len(value) + sum(_key_count(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(_key_count(v) for v in value)
    return 0


def _holds_non_finite(value: Any) -> bool:
    """Whether a float in `value` is NaN or infinite (iterative, exact types first: it runs on
    every value that holds a null, a referral's state among them)."""
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is str or kind is int or item is None or kind is bool:
            continue
        if kind is float:
            if not math.isfinite(item):
                return True
        elif kind is dict:
            pending.extend(item.values())
        elif kind is list or kind is tuple:
            pending.extend(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return False


#: log pages after which a committing connection checkpoints the write-ahead log itself
WAL_AUTOCHECKPOINT_PAGES = 10_000


def _prepare_sqlite(engine: Engine, synchronous: str) -> None:
    if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
        raise RefloopError(f"sqlite synchronous must be NORMAL, FULL or EXTRA, not {synchronous}")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous.upper()}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        # a commit checkpoints the log itself only past 40 MB (SQLite's default is 4 MB): a
        # batch writer checkpoints beside its writes (Database.checkpoint), so its own commits
        # rarely stop to copy pages and fsync the database file
        cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable database URL>"
