"""What a person sees at the terminal: the short ids the listings print work everywhere an id is
asked for (an ambiguous one is named as such), a dead peer gives one clear error with no log
lines before it (they go to the log file), and `db status` shows the core's first revision and
each branch off it."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from referrals.model import Command, Referral
from refloop.cli import main
from refloop.services import build_services
from refloop.settings import Settings

IDS = ("5eed0000-0000-4000-8000-000000000001", "5eed0000-0000-4000-8000-000000000002",
       "c0ffee00-0000-4000-8000-000000000003")


@pytest.fixture
def config(database_url: str, tmp_path: Path) -> Path:
    services = build_services(Settings(var_dir=tmp_path / "var", database_url=database_url))
    try:
        for n, rid in enumerate(IDS):
            draft = Referral(id=rid, source_key=f"t|ServiceRequest/sr-{n}",
                             service_request=f"ServiceRequest/sr-{n}", patient="Patient/p1",
                             specialty="cardiology", priority="routine")
            services.referrals.open(draft, Command("detect"))
    finally:
        services.close()
    path = tmp_path / "refloop.toml"
    path.write_text(f'database_url = "{database_url}"\nvar_dir = "{tmp_path / "var"}"\n',
                    encoding="utf-8")
    return path


def run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), *args])


def test_the_ids_a_listing_prints_are_accepted(config: Path) -> None:
    listing = run(config, "referrals", "list")
    assert listing.exit_code == 0
    shorts = [line.split()[0] for line in listing.stdout.splitlines()[2:]]
    assert sorted(shorts) == sorted(i[-8:] for i in IDS)  # the end of each id
    shown = run(config, "referrals", "show", IDS[2][-8:])
    assert shown.exit_code == 0, shown.output
    assert f"Task/{IDS[2]}" in shown.stdout
    assert run(config, "referrals", "show", "C0FFEE00", "--json").exit_code == 0  # a beginning
    longer = run(config, "referrals", "show", "8000-000000000003", "--json")
    assert longer.exit_code == 0 and IDS[2] in longer.stdout


def test_an_ambiguous_or_unknown_prefix_says_so(config: Path) -> None:
    ambiguous = run(config, "referrals", "show", "5eed0000")
    assert ambiguous.exit_code == 1
    assert "5eed0000 is ambiguous: 2 referral ids begin with it" in ambiguous.output
    assert IDS[0] in ambiguous.output and IDS[1] in ambiguous.output
    unknown = run(config, "referrals", "show", "deadbeef")
    assert unknown.exit_code == 1 and "no referral deadbeef" in unknown.output
    odd = run(config, "referrals", "show", "%")
    assert odd.exit_code == 1 and "no referral %" in odd.output  # no LIKE wildcard
    assert run(config, "outreach", "plan", "5eed0000").exit_code == 1  # the adapters' commands too


@pytest.mark.parametrize("command", ["register", "reconcile"])
def test_a_dead_server_gives_one_clear_error_and_no_log_lines(config: Path,
                                                              command: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/fhir"
    result = run(config, command, "--fhir-base", dead)
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert not [line for line in lines if line.lstrip().startswith("{")], lines
    assert lines[-1].startswith("Error: ") and "reachable" in lines[-1]
    log = config.parent / "var" / "log" / "refloop.log"
    assert str(log) in lines[-1]
    logged = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [e["msg"] for e in logged].count("fhir call failed") >= 3


def test_db_status_shows_the_core_and_each_branch(config: Path) -> None:
    shown = run(config, "db", "status")
    assert shown.exit_code == 0, shown.output
    assert "schema: current (0001_core applied" in shown.stdout
    rows = {line.split()[0]: line.split()[1] for line in shown.stdout.splitlines()[4:]}
    assert "_core_" in rows["core"] and "subscriptions" in rows["subscriptions"]
    data = json.loads(run(config, "db", "status", "--json").stdout)
    assert data["root"] == {"revision": "0001_core", "applied": True}
    assert all(b["pending"] == [] for b in data["branches"]) and data["pending"] == []


def test_a_quarantine_reason_is_shown_whole(config: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A long reason is wrapped to the terminal's width, never cut (it was cut at 80
    characters); into a pipe it stays on one line."""
    reason = " ".join(f"word{n:03d}" for n in range(40)) + " resend after fixing RF1-6"
    database_url = next(line.split('"')[1] for line in config.read_text().splitlines()
                        if line.startswith("database_url"))
    services = build_services(Settings(var_dir=tmp_path / "var", database_url=database_url))
    try:
        services.quarantine.put(origin="hl7:TEST", kind="hl7.message", reason=reason,
                                original=b"MSH|^~\\&|")
    finally:
        services.close()
    monkeypatch.delenv("COLUMNS", raising=False)
    piped = run(config, "quarantine", "list")
    assert piped.exit_code == 0 and reason in piped.stdout
    monkeypatch.setenv("COLUMNS", "100")
    wrapped = run(config, "quarantine", "list")
    lines = wrapped.stdout.splitlines()
    assert wrapped.exit_code == 0 and max(len(line) for line in lines) <= 100
    assert " ".join(" ".join(lines).split()).count("resend after fixing RF1-6") == 1
    assert all(f"word{n:03d}" in wrapped.stdout for n in range(40))
