"""Run the Alembic migrations of the core and of every adapter that adds tables."""

from __future__ import annotations

from pathlib import Path

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


def upgrade(db: Database) -> list[str]:
    """Bring the schema to every head; returns the revisions now applied."""
    config = alembic_config(db)
    with db.engine.begin() as conn:
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
