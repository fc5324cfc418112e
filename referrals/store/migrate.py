"""Run the Alembic migrations of the core and of every adapter that adds tables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from referrals.store.database import Database

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(db: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", db.engine.url.render_as_string(hide_password=False))
    return config


#: PostgreSQL advisory lock key: one node migrates at a time, the others wait and find it done.
MIGRATION_LOCK = 0x7265666C6F6F70  # "refloop"


def upgrade(db: Database) -> list[str]:
    """Bring the schema to every head; returns the revisions now applied.

    Safe when several processes start at once: SQLite takes its write lock at BEGIN (IMMEDIATE)
    and PostgreSQL holds a transaction-scoped advisory lock.
    """
    config = alembic_config(db)
    with db.write() as conn:
        if db.dialect == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = conn
        command.upgrade(config, "heads")
    return current(db)


def current(db: Database) -> list[str]:
    with db.engine.connect() as conn:
        return sorted(MigrationContext.configure(conn).get_current_heads())


def pending(db: Database) -> list[str]:
    """Heads not yet applied (empty when the schema is current)."""
    heads = set(ScriptDirectory.from_config(alembic_config(db)).get_heads())
    return sorted(heads - set(current(db)))


ROOT_REVISION = "0001_core"


@dataclass(frozen=True)
class Branch:
    """One line of migrations off the core's first revision: an adapter's tables, or the core's
    own later changes. `applied` is the newest of its revisions in the database (None: none)."""

    name: str
    revisions: tuple[str, ...]
    applied: str | None

    @property
    def newest(self) -> str:
        return self.revisions[-1]

    @property
    def pending(self) -> tuple[str, ...]:
        start = self.revisions.index(self.applied) + 1 if self.applied else 0
        return self.revisions[start:]


def branches(db: Database) -> list[Branch]:
    """Every branch off `0001_core`, oldest revision first, with what the database has of it."""
    script = ScriptDirectory.from_config(alembic_config(db))
    present = {str(rev.revision) for head in current(db)
               for rev in script.iterate_revisions(head, "base")}
    found = []
    for head in sorted(script.get_heads()):
        chain = [str(rev.revision) for rev in script.iterate_revisions(head, "base")]
        own = tuple(r for r in reversed(chain) if r != ROOT_REVISION)
        if own:
            done = [r for r in own if r in present]
            found.append(Branch(_area(own[0]), own, done[-1] if done else None))
    return sorted(found, key=lambda b: (b.name != "core", b.name))


def _area(revision: str) -> str:
    """`0002_subscriptions` -> subscriptions, `0500_core_coordinator_tasks` -> core."""
    parts = revision.split("_")
    return parts[1] if len(parts) > 1 else revision
