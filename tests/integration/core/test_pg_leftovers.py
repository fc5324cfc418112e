"""Leftover test databases on the PostgreSQL test cluster: a crashed run's template is dropped;
one still in use, and a clone a running session may own, are kept. (PostgreSQL only.)"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from pg_leftovers import drop_database, drop_stale


def gone_pid() -> int:
    """The id of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


@pytest.fixture
def admin(postgres_template: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(postgres_template.replace("postgresql://", "postgresql+psycopg://"),
                              isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def names(admin: sa.Engine) -> set[str]:
    with admin.connect() as conn:
        return set(conn.execute(sa.text("SELECT datname FROM pg_database")).scalars())


def test_a_crashed_runs_template_is_dropped_and_what_may_be_in_use_is_kept(
        postgres_template: str, admin: sa.Engine) -> None:
    crashed, busy = f"refloop_tmpl_{gone_pid()}", f"refloop_tmpl_{gone_pid()}"
    clone = f"t_{uuid.uuid4().hex[:12]}"      # newer than this session's template
    session = f"refloop_tmpl_{os.getppid()}"   # a session started after all of them
    made = [crashed, busy, clone, session]
    with admin.connect() as conn:
        for name in made:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
    holder = sa.create_engine(postgres_template.replace("postgresql://", "postgresql+psycopg://")
                              .rsplit("/", 1)[0] + "/" + busy)
    try:
        with holder.connect():
            dropped = drop_stale(admin, postgres_template, session)
        assert crashed in dropped and crashed not in names(admin)
        assert {busy, clone, session} <= names(admin)
        assert busy not in dropped and clone not in dropped
    finally:
        holder.dispose()
        for name in made:  # a new database may have an autovacuum worker on it for a moment
            drop_database(admin, name)
