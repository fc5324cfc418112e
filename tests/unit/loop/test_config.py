"""The [loop] settings: defaults taken from what a specialist can do, and every wrong value
refused with the key and what to use."""

from __future__ import annotations

from typing import Any

import pytest

from loop.config import LoopConfigError, from_section


def specialist(**extra: Any) -> dict[str, Any]:
    return {"name": "heart", "specialties": ["Cardiology"], **extra}


def test_the_default_ladder_is_what_the_specialist_can_do_then_a_coordinator() -> None:
    config = from_section({"specialists": [
        specialist(fhir_base="https://heart.example/fhir/", email="notes@heart.example"),
        {"name": "skin", "performers": ["Organization/skin"]}]})
    heart, skin = config.specialists
    assert heart.fhir_base == "https://heart.example/fhir"
    assert [(s.step, s.after_days) for s in heart.ladder] == [
        ("fhir-task", 1.0), ("email", 5.0), ("coordinator", 10.0)]
    assert [s.step for s in skin.ladder] == ["coordinator"]
    assert config.specialist_for("cardiology", "") is heart
    assert config.specialist_for("", "Organization/skin") is skin
    assert config.specialist_for("dermatology", "") is None


def test_a_ladder_is_sorted_by_day_and_each_step_needs_its_address() -> None:
    config = from_section({"specialists": [specialist(v2_partner="CARD^HEART", ladder=[
        {"step": "coordinator", "after_days": 9}, {"step": "v2-status", "after_days": 0.5}])]})
    assert [s.step for s in config.specialists[0].ladder] == ["v2-status", "coordinator"]
    with pytest.raises(LoopConfigError, match="step email needs the specialist's email"):
        from_section({"specialists": [specialist(ladder=[{"step": "email"}])]})
    with pytest.raises(LoopConfigError, match="step 'fax'; use one of"):
        from_section({"specialists": [specialist(ladder=[{"step": "fax"}])]})


@pytest.mark.parametrize(("section", "message"), [
    ({"speed": 1}, r"\[loop\]: unknown keys \['speed'\]"),
    ({"specialists": [{"name": "x"}]}, "set specialties or performers"),
    ({"specialists": [specialist(), specialist()]}, "the name 'heart' is used twice"),
    ({"specialists": [specialist(email="nobody")]}, "not an email address"),
    ({"referrers": [{"name": "gp", "servers": ["*"], "channel": "fax"}]}, "channel 'fax'"),
    ({"referrers": [{"name": "gp", "servers": ["*"], "channel": "email"}]},
     "need email ="),
    ({"referrers": [{"name": "gp", "servers": ["*"], "channel": "v2"}]}, "needs v2_partner"),
    ({"referrers": [{"name": "gp", "channel": "fhir"}]}, "set requesters or servers"),
    ({"referrers": [{"name": "gp", "servers": ["*"], "milestones": ["lunch"]}]},
     r"milestones \['lunch'\]"),
    ({"referrers": [{"name": "gp", "servers": ["*"], "time_zone": "Mars/Base"}]},
     "not an IANA time zone"),
    ({"referrers": [{"name": "gp", "servers": ["*"], "digest_hour": 24}]}, "use 0-23"),
    ({"programs": [{"program": "mips", "specialties": ["x"]}]}, "program 'mips'"),
    ({"programs": [{"program": "team"}]}, "set specialties"),
    ({"chase_days": -1}, "must be at least 0"),
    ({"link_days": "soon"}, "is not a number"),
])
def test_wrong_settings_name_the_key(section: dict[str, Any], message: str) -> None:
    with pytest.raises(LoopConfigError, match=message):
        from_section(section)


def test_referrers_match_by_requester_then_server_and_note_follows_the_channel() -> None:
    config = from_section({"referrers": [
        {"name": "dr-okoye", "requesters": ["Practitioner/7"], "channel": "email",
         "email": "okoye@riverside.example"},
        {"name": "riverside", "servers": ["https://riverside.example/fhir/"],
         "channel": "fhir", "milestones": "accepted, failed"},
        {"name": "everyone", "servers": ["*"]}]})
    okoye, riverside, everyone = config.referrers
    assert (okoye.note, riverside.note, everyone.note) == ("link", "fhir", "none")
    assert riverside.milestones == ("accepted", "failed")
    assert config.referrer_for("Practitioner/7", "https://riverside.example/fhir") is okoye
    assert config.referrer_for("Practitioner/8", "https://riverside.example/fhir") is riverside
    assert config.referrer_for("", "hl7:GP^CLINIC") is everyone


def test_programs_default_to_their_rules() -> None:
    team, asm = from_section({"programs": [
        {"program": "team", "specialties": ["Primary care"]},
        {"program": "asm", "specialties": ["cardiology"], "reason_codes": ["I50"]}]}).programs
    assert (team.days, team.goal, team.specialties) == (30.0, "visit", ("primary care",))
    assert (asm.days, asm.goal, asm.reason_codes) == (14.0, "report", ("I50",))
