"""`refloop db backup FILE` / `refloop db restore FILE` on the SQLite store (SQLite's online
backup API): after a restore every referral and event of the backup is there, nothing else; a
backup taken while writers run is consistent; PostgreSQL is pointed to its own tools."""

from __future__ import annotations

import logging
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from referrals.model import Command, Reason, Referral, new_referral_id
from referrals.store.schema import referral_events, referrals
from refloop.cli import main
from refloop.services import Services, build_services
from refloop.settings import Settings


@pytest.fixture(autouse=True)
def keep_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Services, dict[str, str]]]:
    env = {"REFLOOP_CONFIG": "", "REFLOOP_VAR_DIR": str(tmp_path / "var"),
           "REFLOOP_DATABASE_URL": "", "REFLOOP_LOG_LEVEL": "WARNING"}
    assert run(["db", "upgrade"], env).exit_code == 0
    services = build_services(Settings(var_dir=tmp_path / "var"))
    yield services, env
    services.close()


def run(args: list[str], env: dict[str, str]) -> Result:
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


def add(services: Services, tag: str, n: int) -> None:
    for i in range(n):
        referral, _ = services.referrals.open(Referral(
            id=new_referral_id(), source_key=f"{tag}|{i}", service_request=f"ServiceRequest/{i}",
            patient=f"Patient/{i % 4}"), Command("detect"))
        services.referrals.act(referral.id, Command("accept"))
        if i % 2:
            services.referrals.act(referral.id, Command("hold", reason=Reason("travel")))


def snapshot(services: Services) -> tuple[list[Any], list[Any]]:
    with services.db.read() as c:
        found = c.execute(sa.select(referrals.c.id, referrals.c.version, referrals.c.task)
                          .order_by(referrals.c.id)).all()
        events = c.execute(sa.select(referral_events.c.referral_id, referral_events.c.seq,
                                     referral_events.c.action, referral_events.c.data)
                           .order_by(referral_events.c.referral_id, referral_events.c.seq)).all()
    return [tuple(r) for r in found], [tuple(e) for e in events]


def test_restore_brings_back_every_referral_and_event(store: tuple[Services, dict[str, str]],
                                                       tmp_path: Path) -> None:
    services, env = store
    add(services, "before", 30)
    saved = snapshot(services)
    target = tmp_path / "backups" / "refloop-1.db"
    target.parent.mkdir()
    done = run(["db", "backup", str(target)], env)
    assert done.exit_code == 0, done.output
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert run(["db", "backup", str(target)], env).exit_code == 1  # never overwrites
    add(services, "after", 10)
    with services.db.write() as c:  # and some damage
        c.execute(sa.text("DROP TRIGGER IF EXISTS referral_events_no_delete"))
        c.execute(referral_events.delete().where(referral_events.c.seq == 1))
    assert snapshot(services) != saved
    refused = run(["db", "restore", str(target)], {**env}, )
    assert refused.exit_code == 1  # asked, and no answer is no
    restored = run(["db", "restore", str(target), "--yes"], env)
    assert restored.exit_code == 0, restored.output
    assert snapshot(services) == saved  # the running services see the restored store
    assert len(saved[0]) == 30 and len(saved[1]) == 30 * 2 + 15
    listed = run(["referrals", "list", "--json", "--limit", "100"], env)
    assert listed.exit_code == 0 and "before|" in listed.output and "after|" not in listed.output


def test_a_backup_taken_while_writers_run_is_consistent(
        store: tuple[Services, dict[str, str]], tmp_path: Path) -> None:
    services, env = store
    add(services, "base", 5)
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            add(services, f"w{n}", 3)
            n += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        target = tmp_path / "online.db"
        assert run(["db", "backup", str(target)], env).exit_code == 0
    finally:
        stop.set()
        writer.join()
    copy = build_services(Settings(var_dir=tmp_path / "copy", database_url=f"sqlite:///{target}"))
    try:
        found, events = snapshot(copy)
        per_referral: dict[str, int] = {}
        for referral_id, *_rest in events:
            per_referral[referral_id] = per_referral.get(referral_id, 0) + 1
        assert len(found) >= 5
        assert all(per_referral.get(rid) == version for rid, version, _task in found)
        assert set(per_referral) == {rid for rid, _v, _t in found}
    finally:
        copy.close()


def test_restore_refuses_what_is_not_a_refloop_backup(store: tuple[Services, dict[str, str]],
                                                      tmp_path: Path) -> None:
    _services, env = store
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 100)
    empty = tmp_path / "empty.db"
    import sqlite3

    sqlite3.connect(empty).execute("CREATE TABLE t (x)").connection.close()
    for path, phrase in ((junk, "not a SQLite database"), (empty, "not a Refloop database")):
        result = run(["db", "restore", str(path), "--yes"], env)
        assert result.exit_code == 1 and phrase in result.output, result.output
    assert run(["referrals", "list"], env).exit_code == 0  # the store is untouched


def test_postgresql_is_pointed_to_its_own_tools(tmp_path: Path) -> None:
    env = {"REFLOOP_CONFIG": "", "REFLOOP_DATABASE_URL": "postgresql://x@127.0.0.1:1/y"}
    for command in (["db", "backup", str(tmp_path / "b.db")],
                    ["db", "restore", __file__, "--yes"]):
        result = run(command, env)
        assert result.exit_code == 1 and "pg_dump" in result.output, result.output
