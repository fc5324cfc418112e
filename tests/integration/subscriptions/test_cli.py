"""`refloop register`, `refloop subscriptions list` and `refloop reconcile` against sekmet-fhir,
configured through a TOML file with a [[fhir_servers]] table."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from click.testing import CliRunner

from refloop.cli import main


def test_register_list_reconcile(database_url: str, tmp_path: Path, sekmet: Any,
                                 kit: SimpleNamespace) -> None:
    config = tmp_path / "refloop.toml"
    config.write_text(f'database_url = "{database_url}"\nvar_dir = "{tmp_path / "var"}"\n'
                      f'log_level = "WARNING"\n\n[[fhir_servers]]\nbase_url = "{sekmet.base}"\n'
                      'criteria = "ServiceRequest?intent=order"\npoll_interval = 60\n')
    runner = CliRunner()
    base = ["--config", str(config)]
    p = sekmet.create(kit.patient())["id"]
    d = sekmet.create(kit.practitioner())["id"]
    for n in range(3):
        sekmet.create(kit.service_request(p, d, reason=f"reason {n}"))

    result = runner.invoke(main, [*base, "register", "--fhir-base", sekmet.base, "--json"])
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert outcome["flavour"] == "r4-classic" and outcome["status"] == "active"
    assert "secret" not in result.output.lower()

    result = runner.invoke(main, [*base, "register", "--fhir-base", sekmet.base])
    assert result.exit_code == 0 and "(reused)" in result.output

    result = runner.invoke(main, [*base, "reconcile", "--fhir-base", sekmet.base])
    assert result.exit_code == 0, result.output
    assert "3 ServiceRequests (created 3)" in result.output

    result = runner.invoke(main, [*base, "subscriptions", "list", "--json"])
    rows = json.loads(result.stdout)
    assert [(r["server"], r["flavour"], r["status"]) for r in rows] == \
        [(sekmet.base, "r4-classic", "active")]
    assert all("secret" not in r for r in rows)
    result = runner.invoke(main, [*base, "subscriptions", "list"])
    assert sekmet.base in result.output and "r4-classic" in result.output

    result = runner.invoke(main, [*base, "register", "--fhir-base", "http://127.0.0.1:9/fhir"])
    assert result.exit_code == 1 and "reachable" in result.output
