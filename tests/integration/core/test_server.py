"""The server and CLI: /healthz and /readyz, the scheduler's timers across nodes, the `refloop`
commands (CliRunner), and `refloop serve` started for real as a subprocess."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from referrals.model import Command, Referral, new_referral_id
from referrals.store import connect
from refloop.app import create_app
from refloop.cli import main
from refloop.logs import JsonFormatter
from refloop.scheduler import enqueue_due
from refloop.services import Services, build_services
from refloop.settings import Settings
from refloop.wiring import Timer

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2Vu.c2ln"


@pytest.fixture(autouse=True)
def keep_root_logging() -> Iterator[None]:
    """The CLI installs its JSON handler on the root logger; put pytest's back afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_healthz_and_readyz(services: Services) -> None:
    client = create_app(services).test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ready", "database": services.db.dialect}
    icon = client.get("/favicon.ico")  # browsers ask every site for it
    assert icon.status_code == 200 and icon.mimetype == "image/svg+xml"
    assert icon.get_data(as_text=True).startswith("<svg")


def test_readyz_fails_while_migrations_are_pending(tmp_path: Path) -> None:
    services = build_services(Settings(var_dir=tmp_path,
                                       database_url=f"sqlite:///{tmp_path / 'empty.db'}"))
    try:
        response = create_app(services).test_client().get("/readyz")
        assert response.status_code == 503
        body = response.get_json()
        assert body["status"] == "unavailable" and "refloop db upgrade" in body["database"]
        assert body["pending"]  # the heads not yet applied
    finally:
        services.close()


def test_readyz_fails_when_the_database_is_unreachable(tmp_path: Path) -> None:
    services = build_services(Settings(
        var_dir=tmp_path, database_url="postgresql://nobody@127.0.0.1:1/none"))
    try:
        response = create_app(services).test_client().get("/readyz")
        assert response.status_code == 503 and response.get_json()["status"] == "unavailable"
    finally:
        services.close()


def test_http_log_lines_carry_no_tokens(services: Services, fhir_auth: Any) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("refloop")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        client = create_app(services).test_client()
        real = fhir_auth.headers(client, services)["Authorization"]
        client.get(f"/fhir/Task?access_token={TOKEN}",
                   headers={"Authorization": f"Bearer {TOKEN}"})
        client.get("/fhir/Task/x", headers={"Cookie": f"session={TOKEN}",
                                            "Authorization": real})
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["path"], e["status"]) for e in lines if e["msg"] == "http"] == [
        ("/.well-known/smart-configuration", 200), ("/auth/token", 200), ("/fhir/Task", 401),
        ("/fhir/Task/<task_id>", 404)]
    assert TOKEN not in stream.getvalue()
    assert real.split()[1] not in stream.getvalue()


def test_timers_enqueue_one_item_per_slot_across_nodes(database_url: str, tmp_path: Path
                                                       ) -> None:
    timers = [Timer("reap", 60.0, "core.reap"), Timer("poll", 300.0, "test.poll", {"s": "ehr"})]
    node_a = build_services(Settings(var_dir=tmp_path, database_url=database_url))
    node_b = build_services(Settings(var_dir=tmp_path, database_url=database_url))
    try:
        now = 1_800_000_000.0  # a slot boundary for both periods
        assert enqueue_due(node_a.work, timers, now + 1) == 2
        assert enqueue_due(node_b.work, timers, now + 2) == 0  # same slots, other node
        assert enqueue_due(node_b.work, timers, now + 61) == 1  # next reap slot only
        assert enqueue_due(node_a.work, timers, now + 61) == 0
        assert node_a.work.counts() == {"pending": 3}
        claimed = node_a.work.claim("w", kinds=["test.poll"])
        assert [i.payload for i in claimed] == [{"s": "ehr", "timer": "poll",
                                                 "slot": int((now + 1) // 300)}]
    finally:
        node_a.close()
        node_b.close()


# -- the CLI -----------------------------------------------------------------------------------

def run(args: list[str], env: dict[str, str]) -> Result:
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "refloop.toml"
    config.write_text(f'var_dir = "{tmp_path / "var"}"\nlog_level = "WARNING"\n')
    return {"REFLOOP_CONFIG": str(config), "REFLOOP_DATABASE_URL": database_url}


def test_cli_db_upgrade_on_a_fresh_database(tmp_path: Path) -> None:
    env = {"REFLOOP_CONFIG": "", "REFLOOP_VAR_DIR": str(tmp_path / "fresh"),
           "REFLOOP_DATABASE_URL": ""}
    before = run(["referrals", "list"], env)
    assert before.exit_code == 1 and "run 'refloop db upgrade'" in before.output
    upgraded = run(["db", "upgrade"], env)
    assert upgraded.exit_code == 0 and upgraded.output.startswith("database at ")
    assert (tmp_path / "fresh" / "refloop.db").exists()
    status = run(["db", "status", "--json"], env)
    info = json.loads(status.output)
    assert info["pending"] == [] and info["current"]
    assert info["current"] == upgraded.output.removeprefix("database at ").strip().split(", ")
    assert json.loads(run(["referrals", "list", "--json"], env).output) == {"referrals": [],
                                                                             "next": None}
    assert run(["db", "upgrade"], env).exit_code == 0  # a second run changes nothing


def test_cli_referrals_list(cli_env: dict[str, str], services: Services) -> None:
    for n in range(3):
        referral, _ = services.referrals.open(
            Referral(id=new_referral_id(), source_key=f"cli|{n}",
                     service_request=f"ServiceRequest/{n}", patient=f"Patient/{n}",
                     specialty="cardiology"), Command("detect"))
        if n:
            services.referrals.act(referral.id, Command("accept"))
    listed = run(["referrals", "list", "--status", "accepted", "--json"], cli_env)
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)["referrals"]
    assert sorted(r["source_key"] for r in rows) == ["cli|1", "cli|2"]
    assert {r["stage"] for r in rows} == {"accepted"}
    everything = json.loads(run(["referrals", "list", "--json"], cli_env).output)
    assert len(everything["referrals"]) == 3 and everything["next"] is None
    table = run(["referrals", "list"], cli_env)
    assert "cardiology" in table.output and table.output.count("accepted") == 2
    bad = run(["referrals", "list", "--status", "bogus"], cli_env)
    assert bad.exit_code == 2 and "choose from" in bad.output and "loop-closed" in bad.output
    shown = run(["referrals", "show", rows[0]["id"], "--json"], cli_env)
    assert json.loads(shown.output)["task"]["status"] == "accepted"
    missing = run(["referrals", "show", "nope"], cli_env)
    assert missing.exit_code == 1 and "'refloop referrals list' shows their ids" in missing.output


def test_cli_referrals_list_pages_past_the_default_limit(cli_env: dict[str, str],
                                                         services: Services) -> None:
    """More referrals than a page: the JSON says where the next page starts, and following the
    cursors lists every referral exactly once."""
    for n in range(53):
        services.referrals.open(Referral(id=new_referral_id(), source_key=f"page|{n}",
                                         service_request=f"ServiceRequest/{n}",
                                         patient=f"Patient/{n}"), Command("detect"))
    first = json.loads(run(["referrals", "list", "--json"], cli_env).output)
    assert len(first["referrals"]) == 50 and first["next"]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        args = ["referrals", "list", "--json", "--limit", "20"]
        page = json.loads(run([*args, "--cursor", cursor] if cursor else args, cli_env).output)
        seen += [r["source_key"] for r in page["referrals"]]
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 53 and set(seen) == {f"page|{n}" for n in range(53)}
    table = run(["referrals", "list", "--limit", "50"], cli_env)
    assert "more: refloop referrals list --cursor " in table.output
    bad = run(["referrals", "list", "--cursor", "nonsense"], cli_env)
    assert bad.exit_code == 2 and "not a page cursor" in bad.output


def test_cli_quarantine_list_and_work_drain(cli_env: dict[str, str], services: Services) -> None:
    assert "quarantine is empty" in run(["quarantine", "list"], cli_env).output
    services.inbox.reject("mllp", "clinic", b"MSH|bad", "MSH-9 is missing")
    services.work.enqueue("core.reap", {}, key="reap-now")
    listed = json.loads(run(["quarantine", "list", "--json"], cli_env).output)
    assert [(e["origin"], e["kind"], e["reason"], e["bytes"]) for e in listed] == [
        ("inbox", "mllp", "MSH-9 is missing", 7)]
    drained = run(["work", "drain"], cli_env)
    assert drained.exit_code == 0 and "processed 1 work items" in drained.output
    assert services.work.counts() == {"done": 1}


def test_cli_says_what_to_do_when_the_database_is_unreachable(tmp_path: Path) -> None:
    env = {"REFLOOP_CONFIG": "", "REFLOOP_DATABASE_URL":
           "postgresql://refloop:s3cret@127.0.0.1:1/refloop"}
    result = run(["referrals", "list"], env)
    assert result.exit_code == 1
    assert "REFLOOP_DATABASE_URL" in result.output and "s3cret" not in result.output
    assert "Traceback" not in result.output


def test_cli_reports_bad_settings_in_one_line(tmp_path: Path) -> None:
    result = run(["referrals", "list"], {"REFLOOP_CONFIG": "", "REFLOOP_HTTP_PORT": "eighty"})
    assert result.exit_code == 1
    assert "REFLOOP_HTTP_PORT" in result.output and "Traceback" not in result.output


def test_cli_demo_runs_without_serving(tmp_path: Path) -> None:
    with socket.socket() as s:  # the hook endpoint the payer's notification goes to
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"REFLOOP_CONFIG": "", "REFLOOP_VAR_DIR": str(tmp_path / "var"),
           "REFLOOP_DATABASE_URL": "", "REFLOOP_LOG_LEVEL": "WARNING",
           "REFLOOP_HTTP_PORT": str(port)}
    args = ["demo", "--no-serve"]
    if "--ehr" in run(["demo", "--help"], env).output:  # the option another issue adds
        args += ["--ehr", "none"]
    result = run(args, env)
    assert result.exit_code == 0, result.output
    # the HL7 v2 referral: ACKed over MLLP, mapped with its IN1 coverage, through PAS
    assert "sent v2_referral.hl7 to the MLLP listener: ACK AA" in result.output
    assert "payer from IN1: Demo Health Plan" in result.output
    # patient outreach: a send within seconds, a quiet-hours deferral, a STOP honoured
    assert "first SMS handed to the gateway after" in result.output
    assert "first SMS deferred [quiet-hours]" in result.output
    assert "not sent [opted-out]" in result.output and "Time to first contact" in result.output
    assert re.search(r"prior authorization \w+: approved \S+ \(referral outreach\), learnt "
                     r"from the payer's notification", result.output), result.output
    assert '"level"' not in result.output  # no JSON log lines in the report
    settings = Settings(var_dir=tmp_path / "var")
    services = build_services(settings)
    try:
        referrals = services.store.list(limit=1000)
        assert len(referrals) >= 50
        assert len({r.stage for r in referrals}) >= 8
        assert len({r.specialty for r in referrals}) >= 5
        v2 = services.store.try_get_by_source("hl7|DEMOEHR^NORTHCLINIC|DEMO-V2-0001^DEMOEHR")
        assert v2 is not None and v2.auth_state == "approved"
    finally:
        services.close()
    again = run(args, env)  # idempotent: nothing new the second time
    assert again.exit_code == 0 and "0 new referrals" in again.output
    assert "went through it on an earlier run" in again.output


# -- refloop serve --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_serve_starts_answers_and_stops_on_sigterm(database_url: str, tmp_path: Path,
                                                   fhir_auth: Any) -> None:
    port = free_port()
    env = {**os.environ, "REFLOOP_CONFIG": "", "REFLOOP_HTTP_PORT": str(port),
           "REFLOOP_DATABASE_URL": database_url, "REFLOOP_VAR_DIR": str(tmp_path / "var"),
           "REFLOOP_WEB_WORKERS": "1", "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "refloop", "serve"], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        status = 0
        while time.monotonic() < deadline and server.poll() is None:
            try:
                status, _body = get(f"{base}/readyz")
            except OSError:
                status = 0
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200, "refloop serve never became ready"
        code, statement = get(f"{base}/fhir/metadata")
        assert code == 200 and statement["resourceType"] == "CapabilityStatement"
        assert get(f"{base}/fhir/Task?_count=1")[0] == 401
        services = build_services(Settings(var_dir=tmp_path / "var", database_url=database_url))
        try:
            headers = fhir_auth.headers(base, services, "system/Task.rs")
        finally:
            services.close()
        code, bundle = get(f"{base}/fhir/Task?_count=1", headers)
        assert code == 200 and bundle["type"] == "searchset"
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        stderr = server.stderr.read().decode() if server.stderr else ""
    assert "Refloop serving on" in stderr
    with pytest.raises(OSError):  # nothing listens any more: the children stopped too
        urllib.request.urlopen(f"{base}/healthz", timeout=2)
    assert connect(database_url).dialect in ("sqlite", "postgresql")
