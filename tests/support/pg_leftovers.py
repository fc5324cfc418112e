"""Test databases a crashed or interrupted pytest run left on the PostgreSQL test cluster.

The fixtures make two kinds (tests/conftest.py): a session's template, `refloop_tmpl_<pid>`
(the pid of its pytest process), and a clone per test, `t_<12 hex>`, dropped when the test ends.
A run that is killed never drops them. At the start of each session the fixtures drop the ones
that are certainly stale, and only those older than the session's own template (database oids
grow as databases are made) that nobody is connected to:

* a template whose pytest process is gone (on this machine: the cleanup runs only against a
  cluster on the loopback interface, which serves this machine's runs alone);
* a clone older than every live session's template: each session makes its template before
  its clones, so such a clone belongs to no running session.

Other databases are never touched.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import sqlalchemy as sa

TEMPLATE = re.compile(r"refloop_tmpl_(\d+)")
CLONE = re.compile(r"t_[0-9a-f]{12}")
LOCAL_HOSTS = frozenset({"", "127.0.0.1", "localhost", "::1"})
#: (name, oid, someone connected)
Found = tuple[str, int, bool]


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def stale(found: Iterable[Found], current: str,
          alive: Callable[[int], bool] = process_alive) -> list[str]:
    """The names among `found` that no running session can be using; `current` is this
    session's template (nothing is stale before it exists)."""
    rows = list(found)
    mine = next((oid for name, oid, _ in rows if name == current), None)
    if mine is None:
        return []
    oldest = min((oid for name, oid, _ in rows
                  if (m := TEMPLATE.fullmatch(name)) and alive(int(m.group(1)))), default=mine)
    dead = []
    for name, oid, connected in rows:
        if connected or oid >= mine:
            continue
        template = TEMPLATE.fullmatch(name)
        if (template and not alive(int(template.group(1)))) or \
                (CLONE.fullmatch(name) and oid < oldest):
            dead.append(name)
    return dead


def ours(conn: sa.Connection) -> list[Found]:
    """Every database named as the fixtures name theirs, with whether anyone is connected."""
    return [(str(name), int(oid), bool(connected)) for name, oid, connected in conn.execute(sa.text(
        "SELECT d.datname, d.oid::bigint, EXISTS (SELECT 1 FROM pg_stat_activity a "
        "WHERE a.datname = d.datname) FROM pg_database d "
        "WHERE d.datname ~ '^(refloop_tmpl_[0-9]+|t_[0-9a-f]{12})$'"))]


def drop_stale(admin: sa.Engine, url: str, current: str) -> list[str]:
    """Drop the stale databases (see the module's text); the names dropped. Not WITH (FORCE):
    a database someone connected to since the look-up is left for a later run."""
    if (urlsplit(url).hostname or "") not in LOCAL_HOSTS:
        return []
    dropped = []
    with admin.connect() as conn:
        for name in stale(ours(conn), current):
            try:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
            except sa.exc.DBAPIError:
                continue  # in use after all, or not ours to drop
            dropped.append(name)
    return dropped


def drop_database(admin: sa.Engine, name: str, tries: int = 20) -> None:
    """DROP ... WITH (FORCE) cannot end an autovacuum worker that the cluster's superuser runs
    on the database ("must be a member of the role whose process is being terminated"); the
    worker finishes within moments, so try again briefly."""
    for attempt in range(tries):
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            return
        except sa.exc.ProgrammingError:
            if attempt == tries - 1:
                raise
            time.sleep(0.25)
