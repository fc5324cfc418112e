"""`refloop hl7 send FILE... --host --port [--json]` against the running MLLP listener, on
SQLite and PostgreSQL: text and JSON output, the progress bar for many files, exit code 1 with
a clear message on AE/AR and on a refused connection."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from hl7_bridge.config import load_config
from referrals.store.schema import inbox
from refloop.cli import main
from refloop.services import Services

from .conftest import FIXTURES, free_port, listening

GOOD = "authored__REF_I12_new_referral_utf8.hl7"


@pytest.fixture
def port(services: Services) -> Iterator[int]:
    with listening(services, load_config({"port": 0})) as bound:
        yield bound


@pytest.fixture
def base(database_url: str, tmp_path: Path) -> list[str]:
    config = tmp_path / "refloop.toml"
    config.write_text(f'database_url = "{database_url}"\nvar_dir = "{tmp_path / "var"}"\n'
                      'log_level = "WARNING"\n')
    return ["--config", str(config)]


def message(tmp_path: Path, control_id: str, event: str = "A04") -> Path:
    path = tmp_path / f"{control_id}.hl7"
    path.write_bytes(f"MSH|^~\\&|PAS|HOSP|HUB|HUB|20240101120000||ADT^{event}|{control_id}|P|"
                     f"2.5.1\rPID|1||{control_id}^^^HOSP^MR||Doe^Jane||19800101|F\r".encode())
    return path


def test_text_output_for_one_file(port: int, base: list[str], services: Services) -> None:
    result = CliRunner().invoke(main, [*base, "hl7", "send", str(FIXTURES / GOOD),
                                       "--port", str(port)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{FIXTURES / GOOD}: CA GP000101"
    assert "sending" not in result.stderr  # no progress bar for one file
    with services.db.read() as conn:
        assert conn.execute(sa.select(inbox.c.status)).scalar_one() == "received"


def test_json_and_progress_for_many_files(port: int, base: list[str], tmp_path: Path,
                                          services: Services) -> None:
    files = [message(tmp_path, f"M{n}") for n in range(6)]
    result = CliRunner().invoke(main, [*base, "hl7", "send", *map(str, files), "--port",
                                       str(port), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["file"], r["code"], r["control_id"]) for r in rows] == \
        [(str(f), "AA", f"M{n}") for n, f in enumerate(files)]
    assert "sending" in result.stderr  # click.progressbar on stderr
    with services.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(inbox)).scalar() == 6


def test_a_rejected_message_exits_1_with_the_reason(port: int, base: list[str],
                                                    tmp_path: Path) -> None:
    good, bad = message(tmp_path, "G1"), message(tmp_path, "B1", event="Z99")
    result = CliRunner().invoke(main, [*base, "hl7", "send", str(good), str(bad),
                                       "--port", str(port)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"{good}: AA G1"
    assert lines[1].startswith(f"{bad}: AR B1") and "not supported" in lines[1]
    assert "1 of 2 messages were not accepted" in result.stderr

    result = CliRunner().invoke(main, [*base, "hl7", "send", str(bad), "--port", str(port),
                                       "--json"])
    assert result.exit_code == 1
    (row,) = json.loads(result.stdout)
    assert row["code"] == "AR" and row["errors"] and "201" in row["errors"][0]


def test_connection_refused_says_what_to_do(base: list[str], tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [*base, "hl7", "send", str(message(tmp_path, "X1")),
                                       "--port", str(free_port())])
    assert result.exit_code == 1
    assert "cannot connect to MLLP peer 127.0.0.1" in result.stderr
    assert "refloop serve --role mllp" in result.stderr
    assert "Traceback" not in result.output
