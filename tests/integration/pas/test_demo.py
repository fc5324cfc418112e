"""`run_demo_prior_auth`: a demo referral is checked (eligibility, CRD) and goes through a pend
and an approval at the PAYER SANDBOX (a fake payer, started by the function on a free port)."""

from __future__ import annotations

import json
from pathlib import Path

from referrals.model import Stage
from refloop.demo_data import load_referral
from refloop.services import Services
from refloop.wiring.pas import run_demo_prior_auth

DEMO = Path(__file__).resolve().parents[3] / "fixtures" / "demo" / "referrals.json"


def test_demo_prior_auth_pends_then_approves(services: Services) -> None:
    item = next(i for i in json.loads(DEMO.read_text("utf-8")) if i["path"] == ["accept"])
    load_referral(services, item)
    lines: list[str] = []
    result = run_demo_prior_auth(services, echo=lines.append)
    assert lines[0].startswith("eligibility: coverage active, plan Sandbox Gold PPO")
    assert lines[1].startswith("authorization required (") and "CRD" in lines[1]
    assert "pended" in lines[2]
    assert result["status"] == "approved" and result["auth_number"].startswith("SBX")
    assert result["stage"] == Stage.OUTREACH.value
    # the stopped sandbox's registration is ended, not left among the live ones
    registrations = services.adapters["subscriptions"].registrations()
    assert [r.status for r in registrations if r.purpose == "pas"] == ["ended"]
