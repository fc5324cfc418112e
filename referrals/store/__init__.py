"""The durable store: SQLite (WAL) by default, PostgreSQL in production."""

from referrals.store.database import Database, connect

__all__ = ["Database", "connect"]
