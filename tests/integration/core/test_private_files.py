"""Secrets and patient data at rest: the var directory is created 0700, the SQLite database
(and its -wal and -shm files) and the key files 0600, whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from refloop.cli import main
from refloop.services import build_services
from refloop.settings import Settings


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    previous = os.umask(0o022)  # what most systems run with: files 0644, directories 0755
    yield
    os.umask(previous)


def test_services_create_a_private_var_dir_database_and_key(tmp_path: Path,
                                                            open_umask: None) -> None:
    var = tmp_path / "deep" / "var"
    services = build_services(Settings(var_dir=var))
    try:
        with services.db.write() as c:  # touch the database so SQLite makes its WAL files
            c.exec_driver_sql("CREATE TABLE IF NOT EXISTS probe (x INTEGER)")
        assert mode(var) == 0o700
        assert mode(var / "refloop.db") == 0o600
        for extra in ("refloop.db-wal", "refloop.db-shm"):  # present while a connection is
            assert mode(var / extra) == 0o600, extra
        assert mode(var / "smart-token.key") == 0o600
    finally:
        services.close()


def test_db_upgrade_on_a_fresh_machine(tmp_path: Path, open_umask: None) -> None:
    var = tmp_path / "var"
    env = {"REFLOOP_CONFIG": "", "REFLOOP_VAR_DIR": str(var), "REFLOOP_DATABASE_URL": ""}
    result = CliRunner().invoke(main, ["db", "upgrade"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert mode(var) == 0o700 and mode(var / "refloop.db") == 0o600
    assert all(mode(p) == 0o600 for p in var.glob("refloop.db*"))


def test_an_existing_directory_and_database_keep_their_modes(tmp_path: Path,
                                                             open_umask: None) -> None:
    var = tmp_path / "var"
    var.mkdir(mode=0o750)
    os.chmod(var, 0o750)
    (var / "refloop.db").touch(mode=0o640)
    os.chmod(var / "refloop.db", 0o640)
    build_services(Settings(var_dir=var)).close()
    assert mode(var) == 0o750 and mode(var / "refloop.db") == 0o640  # the operator's choice
