"""`refloop scheduling link | slots | revoke | replan` through the CLI with a TOML file holding
a destination whose calendar is on sekmet-fhir; a wrong destination stops with the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from calendar_data import make_calendar
from click.testing import CliRunner
from sched_world import open_referral

from refloop.cli import main
from refloop.services import build_services
from refloop.settings import load_settings


def test_link_slots_revoke_replan(database_url: str, tmp_path: Path, sekmet: Any) -> None:
    calendar = make_calendar(sekmet.base, slots=2)
    config = tmp_path / "refloop.toml"
    config.write_text(
        f'database_url = "{database_url}"\nvar_dir = "{tmp_path / "var"}"\n'
        'log_level = "WARNING"\npublic_base_url = "https://refloop.example"\n\n'
        f'[scheduling]\nreminder_days = [3, 1]\n\n[[scheduling.destinations]]\n'
        f'name = "cardiology"\nspecialties = ["cardiology"]\nfhir_base = "{sekmet.base}"\n'
        f'schedule_actors = ["Practitioner/{calendar.practitioner}"]\n'
        'time_zone = "America/Chicago"\nsubscribe = false\n')
    services = build_services(load_settings(config))
    referral = open_referral(services, calendar)
    services.close()
    runner = CliRunner()
    base = ["--config", str(config)]

    result = runner.invoke(main, [*base, "scheduling", "link", referral.id, "--json"])
    assert result.exit_code == 0, result.output
    link = json.loads(result.stdout)["link"]
    assert link.startswith("https://refloop.example/p/") and len(link) > 60

    result = runner.invoke(main, [*base, "scheduling", "slots", referral.id, "--json"])
    assert result.exit_code == 0, result.output
    assert [s["key"] for s in json.loads(result.stdout)["slots"]] == calendar.slots

    result = runner.invoke(main, [*base, "scheduling", "link", "no-such-referral"])
    assert result.exit_code != 0 and "no referral no-such-referral" in result.output

    result = runner.invoke(main, [*base, "scheduling", "revoke", referral.id])
    assert result.exit_code == 0 and "1 link(s) revoked" in result.output

    services = build_services(load_settings(config))
    from scheduling.adapter import PATIENT

    assert services.adapters["scheduling"].booker.book(
        referral.id, calendar.slots[0], PATIENT).booked is not None
    services.close()
    result = runner.invoke(main, [*base, "scheduling", "replan", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"appointments": 1, "steps": 2}

    config.write_text(config.read_text().replace('time_zone = "America/Chicago"',
                                                 'time_zone = "Mars/Olympus"'))
    result = runner.invoke(main, [*base, "scheduling", "slots", referral.id])
    assert result.exit_code != 0 and "IANA" in result.output
