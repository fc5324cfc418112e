"""Online backup and restore of the SQLite store with SQLite's backup API: a consistent copy
while the server keeps writing, and a restore that replaces the live database's content in one
step (other connections see the old content or the new one, never a mix)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from referrals.errors import RefloopError

PAGES_PER_STEP = 1024
#: (pages copied, pages in all)
Progress = Callable[[int, int], None]


class BackupError(RefloopError):
    """A backup or restore that cannot be made; the message says why and what to do."""


def backup(database: Path, target: Path, progress: Progress | None = None) -> int:
    """Copy `database` to the new file `target` (mode 0600); returns the pages copied."""
    if not database.exists():
        raise BackupError(f"there is no SQLite database at {database}")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise BackupError(f"{target} exists; choose a new file name (a backup never "
                          "overwrites)") from exc
    except OSError as exc:
        raise BackupError(f"cannot create {target}: {exc.strerror}") from exc
    os.close(fd)
    try:
        return _copy(database, target, progress)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def restore(source: Path, database: Path, progress: Progress | None = None) -> int:
    """Replace the content of `database` with the backup `source`; returns the pages copied."""
    check_backup(source)
    return _copy(source, database, progress)


def check_backup(path: Path) -> None:
    """Raise BackupError unless `path` is an intact SQLite database of Refloop's."""
    if not path.is_file():
        raise BackupError(f"{path} is not a file")
    try:
        with _open(path, read_only=True) as conn:
            verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path} is not a SQLite database ({exc})") from exc
    if verdict != "ok":
        raise BackupError(f"{path} is damaged: {verdict}")
    if not {"alembic_version", "referrals", "referral_events"} <= tables:
        raise BackupError(f"{path} is not a Refloop database (no referrals tables)")


def _copy(source: Path, target: Path, progress: Progress | None) -> int:
    with _open(source, read_only=True) as src, _open(target) as dst:
        def step(_status: int, remaining: int, total: int) -> None:
            if progress is not None:
                progress(total - remaining, total)

        src.backup(dst, pages=PAGES_PER_STEP, progress=step)
        return int(dst.execute("PRAGMA page_count").fetchone()[0])


def _open(path: Path, *, read_only: bool = False) -> closing[sqlite3.Connection]:
    uri = f"file:{path.resolve()}" + ("?mode=ro" if read_only else "")
    return closing(sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None))
