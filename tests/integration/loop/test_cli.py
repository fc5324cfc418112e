"""`refloop loop status|clocks|upload-link|digest` and the closed-loop section of `refloop
referrals show`, on SQLite and PostgreSQL, over a referral the loop worked on."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner
from loop_world import Ehr, World, close_world, make_world

from refloop.cli import main

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def write_config(w: World, tmp_path: Path, referrer: Ehr) -> Path:
    path = tmp_path / "refloop.toml"
    path.write_text("\n".join([
        f'database_url = "{w.services.settings.database_url}"',
        f'var_dir = "{w.services.settings.var_dir}"',
        f'public_base_url = "{w.url}"', "",
        "[[loop.referrers]]", 'name = "riverside"', f'servers = ["{referrer.base}"]',
        'channel = "fhir"', "",
        "[[loop.programs]]", 'program = "team"', 'specialties = ["primary care"]',
        'encounter_classes = ["IMP"]', ""]))
    return path


def run(config: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["--config", str(config), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_status_clocks_links_and_referrals_show(database_url: str, tmp_path: Path,
                                                ehrs: tuple[Ehr, Ehr]) -> None:
    referrer, specialist = ehrs
    w = make_world(database_url, tmp_path, referrer, specialist, {
        "referrers": [{"name": "riverside", "servers": [referrer.base], "channel": "fhir"}],
        "programs": [{"program": "team", "specialties": ["primary care"],
                      "encounter_classes": ["IMP"]}]})
    try:
        stay = referrer.create({"resourceType": "Encounter", "status": "finished",
                                "class": {"system": ACT_CODE, "code": "IMP"},
                                "period": {"end": (w.clock.now - timedelta(days=2)).isoformat()}})
        referral = w.referral("primary care", service_request={
            "encounter": {"reference": f"Encounter/{stay['id']}"}})
        config = write_config(w, tmp_path, referrer)
        shown = json.loads(run(config, "loop", "status", referral.id, "--json"))
        assert [c["program"] for c in shown["clocks"]] == ["team"]
        assert [(u["milestone"], u["channel"]) for u in shown["updates"]] == [
            ("accepted", "fhir")]
        assert shown["updates"][0]["sent_at"] is not None and shown["chase"] is None
        table = run(config, "loop", "status", referral.id)
        assert "clock: team" in table and "update: accepted" in table and "running" in table
        clocks = json.loads(run(config, "loop", "clocks", "--json"))
        assert [(c["referral_id"], c["program"]) for c in clocks] == [(referral.id, "team")]
        link = run(config, "loop", "upload-link", referral.id).strip()
        assert link.startswith(f"{w.url}/loop/u/") and len(link) > len(w.url) + 40
        assert "no email updates waiting" in run(config, "loop", "digest")
        details = run(config, "referrals", "show", referral.id)
        assert "\nClosed loop\n" in details and "clock: team" in details
        missing = CliRunner().invoke(main, ["--config", str(config), "loop", "status", "nope"])
        assert missing.exit_code != 0 and "referrals list" in missing.output
    finally:
        close_world(w)
