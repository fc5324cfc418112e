"""The configured database's schema, brought current (`refloop db upgrade`, `serve`, `demo`)."""

from __future__ import annotations

from referrals.store import connect
from referrals.store.migrate import upgrade
from refloop.files import ensure_private_dir
from refloop.settings import Settings


def ensure_schema(settings: Settings) -> list[str]:
    """Apply every pending migration; returns the revisions now applied (the heads)."""
    if not settings.database_url:
        ensure_private_dir(settings.var_dir)
    database = connect(settings.database, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        return upgrade(database)
    finally:
        database.dispose()
