"""Hook secrets: stored only as hashes (also after migrating plain secrets), compared in
constant time, rotated with `refloop subscriptions rotate-secret` (the Subscription on the EHR,
sekmet-fhir, gets the new header; the old secret works during the grace period only)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import requests
import sqlalchemy as sa
from alembic import command
from click.testing import CliRunner

from referrals.store import connect
from referrals.store.migrate import alembic_config, upgrade
from refloop.cli import main
from subscriptions.tables import registrations

SR = {"resourceType": "ServiceRequest", "id": "s1", "status": "active", "intent": "order"}


def test_hook_ids_never_look_like_command_line_options(services: Any) -> None:
    registry = services.adapters["subscriptions"].registry
    ids = [registry.open_hook(server="http://ehr", purpose="referrals", deliver_kind="k").id
           for _ in range(200)]
    assert not any(i.startswith("-") for i in ids) and len(set(ids)) == 200


def test_plain_secrets_are_hashed_by_the_migration(database_url: str) -> None:
    db = connect(database_url)
    try:
        config = alembic_config(db)
        command.downgrade(config, "0002_subscriptions")
        now = datetime.now(UTC)
        with db.write() as conn:
            conn.execute(sa.text(
                "INSERT INTO subscription_registrations (hook_id, server, purpose, deliver_kind,"
                " secret, created_at, updated_at) VALUES ('h1', 'http://ehr', 'referrals', "
                "'k', 'plain-secret', :now, :now)"), {"now": now})
        upgrade(db)
        with db.read() as conn:
            row = conn.execute(sa.select(registrations)).mappings().one()
            columns = {c["name"] for c in sa.inspect(conn).get_columns(registrations.name)}
    finally:
        db.dispose()
    assert "secret" not in columns
    assert row["secret_hash"] == "sha256:" + hashlib.sha256(b"plain-secret").hexdigest()


def put(listener: Any, hook_id: str, secret: str, n: int) -> int:
    url = f"http://127.0.0.1:{listener.port}/hooks/{hook_id}/ServiceRequest/s{n}"
    return requests.put(url, json={**SR, "id": f"s{n}"}, timeout=5, headers={
        "Authorization": f"Bearer {secret}", "Content-Type": "application/fhir+json"}).status_code


def header_secret(sekmet: Any, subscription_id: str) -> tuple[str, list[str]]:
    headers = sekmet.read(f"Subscription/{subscription_id}")["channel"]["header"]
    auth = [h for h in headers if h.startswith("Authorization:")]
    return auth[0].split(" ", 2)[2], headers


def test_rotate_secret_updates_the_subscription_with_a_grace_period(
        listener: Any, sekmet: Any, kit: SimpleNamespace, tmp_path: Path) -> None:
    services = listener.services
    subs = services.adapters["subscriptions"]
    outcome = subs.register(sekmet.base)
    old, _ = header_secret(sekmet, outcome.subscription_id)
    with services.db.read() as conn:
        stored = conn.execute(sa.select(registrations.c.secret_hash)).scalar_one()
    assert old not in stored and stored == "sha256:" + hashlib.sha256(old.encode()).hexdigest()

    config = tmp_path / "refloop.toml"
    config.write_text(f'database_url = "{services.settings.database_url}"\n'
                      f'var_dir = "{tmp_path / "var"}"\nlog_level = "WARNING"\n'
                      f'[subscriptions]\nrotate_grace_seconds = 600\n')
    result = CliRunner().invoke(main, ["--config", str(config), "subscriptions",
                                       "rotate-secret", "--json", "--", outcome.hook_id])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["subscription_id"] == outcome.subscription_id
    new, headers = header_secret(sekmet, outcome.subscription_id)
    assert new != old and new not in result.output and old not in result.output
    assert len([h for h in headers if h.startswith("Authorization:")]) == 1
    assert put(listener, outcome.hook_id, new, 1) == 200
    assert put(listener, outcome.hook_id, old, 2) == 200  # within the grace period
    with services.db.write() as conn:  # the grace period is over
        conn.execute(registrations.update().values(
            previous_secret_until=datetime.now(UTC) - timedelta(seconds=1)))
    subs.registry._cache.clear()
    assert put(listener, outcome.hook_id, old, 3) == 401
    assert put(listener, outcome.hook_id, new, 4) == 200

    result = CliRunner().invoke(main, ["--config", str(config), "subscriptions",
                                       "rotate-secret", "no-such-hook"])
    assert result.exit_code == 1 and "no hook 'no-such-hook'" in result.output
    assert "Traceback" not in result.output


def test_a_refused_rotation_keeps_the_old_secret(listener: Any, sekmet: Any) -> None:
    services = listener.services
    subs = services.adapters["subscriptions"]
    outcome = subs.register(sekmet.base)
    old, _ = header_secret(sekmet, outcome.subscription_id)
    subs.registry.attach(outcome.hook_id, "not-on-the-server")
    try:
        subs.rotate_secret(outcome.hook_id)
    except Exception as exc:
        assert "404" in str(exc) or "not" in str(exc).lower()
    else:
        raise AssertionError("the rotation should have failed")
    subs.registry._cache.clear()
    assert put(listener, outcome.hook_id, old, 1) == 200
    with services.db.read() as conn:
        row = conn.execute(sa.select(registrations)).mappings().one()
    assert row["previous_secret_hash"] is None
