"""`refloop outreach plan`, `send-test`, `optouts` and the outreach section of `refloop
referrals show`, against the sandbox."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from outreach_harness import NY_MOBILE, Harness, write_config

from refloop.cli import main


def _run(config: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["--config", str(config), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_plan_optouts_send_test_and_referrals_show(harness: Harness, tmp_path: Path) -> None:
    h = harness
    config = write_config(h, tmp_path)
    h.patient("c1")
    waiting = h.referral("c1", accept=False)
    assert "no outreach yet" in _run(config, "outreach", "plan", waiting.id)
    h.patient("c2", phone="+12015550123")
    referral = h.referral("c2", priority="urgent")
    h.settle()
    shown = _run(config, "outreach", "plan", referral.id)
    assert "ladder urgent v1" in shown and "America/New_York" in shown
    assert "sms: sent" in shown and "2030-03-06 14:00" in shown  # 09:00 next morning, NY
    assert "Next: rung 2, voice (first-contact) due" in shown and "would send" in shown
    as_json = json.loads(_run(config, "outreach", "plan", referral.id, "--json"))
    assert [r["channel"] for r in as_json["rungs"]] == ["sms", "voice", "sms", "task"]

    # the day's plan (the harness's clock is in 2030: look far enough ahead)
    due = json.loads(_run(config, "outreach", "due", "--hours", "100000", "--json"))
    mine = [d for d in due if d["referral_id"] == referral.id]
    assert [(d["rung"], d["channel"], d["decision"]) for d in mine] == [(2, "voice", "send")]
    assert "nothing due in the next 1 h" in _run(config, "outreach", "due", "--hours", "1")
    assert "no opt-outs" in _run(config, "outreach", "optouts")
    h.twilio.reply("+12015550123", "STOP")
    h.settle()
    rows = json.loads(_run(config, "outreach", "optouts", "--json"))
    assert {(r["patient"], r["channel"], r["source"]) for r in rows} >= {
        ("Patient/c2", "sms", "sms-keyword")}
    assert "Patient/c2" in _run(config, "outreach", "optouts")

    details = _run(config, "referrals", "show", referral.id)
    assert "Outreach" in details and "first-contact" in details and "reply" in details
    sent = _run(config, "outreach", "send-test", "--to", NY_MOBILE)
    assert "test sms to +12125550123 handed to the provider" in sent
    assert h.twilio.messages(NY_MOBILE)[-1].body == \
        "Springfield Medical Group: this is a test message from Refloop."
    bad = CliRunner().invoke(main, ["--config", str(config), "outreach", "send-test", "--to",
                                    "12"])
    assert bad.exit_code == 1 and "not a valid phone number" in bad.output
    mailed = _run(config, "outreach", "send-test", "--to", "it@example.org")
    assert "test email to it@example.org" in mailed and h.mail.wait_for(1)
