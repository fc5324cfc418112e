"""Templates (language fallback, opt-out footer, minimum necessary), SMS segments (GSM-7 and
UCS-2), contact points (rank, use, period, E.164, email), time zones, settings and ladders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from outreach import segments
from outreach.config import OutreachConfigError, from_settings
from outreach.contacts import contact_points, language
from outreach.ladders import DEFAULT_LADDERS, LadderError, Rung, choose, from_config
from outreach.templates import TEMPLATES, TemplateError, check_minimum_necessary, render
from outreach.timezones import resolve

PARAMS = {"practice": "Springfield Medical Group", "practice_phone": "+15555550100",
          "referrer": "Dr. Rivera"}
NOW = datetime(2025, 7, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "encoding", "units", "count"), [
    ("a" * 160, "GSM-7", 160, 1), ("a" * 161, "GSM-7", 161, 2), ("a" * 306, "GSM-7", 306, 2),
    ("a" * 307, "GSM-7", 307, 3), ("{" * 80, "GSM-7", 160, 1), ("{" * 81, "GSM-7", 162, 2),
    ("é ñ ü ¿ ¡", "GSM-7", 9, 1), ("á" * 70, "UCS-2", 70, 1), ("á" * 71, "UCS-2", 71, 2),
    ("á" * 135, "UCS-2", 135, 3), ("\U0001F600" * 35, "UCS-2", 70, 1),
    ("\U0001F600" * 36, "UCS-2", 72, 2), ("\u2019", "UCS-2", 1, 1), ("", "GSM-7", 0, 0)])
def test_segments(text: str, encoding: str, units: int, count: int) -> None:
    assert segments.count(text) == segments.Segments(encoding, units, count)


def test_an_escape_pair_is_never_split() -> None:
    # 306 septets fit two 153-septet segments, but not when an escape pair would straddle them
    assert segments.count("a" * 306).count == 2
    straddling = segments.count("a" * 152 + "{" + "a" * 152)
    assert (straddling.units, straddling.count) == (306, 3)


def test_every_purpose_renders_in_english_and_spanish_with_footer() -> None:
    params = {**PARAMS, "link": "https://r.example/b/x", "when": "1 July 09:30",
              "location": "123 Main St", "clinician": "Dr. Lee",
              "instructions_link": "https://r.example/p/x", "unsubscribe": "https://u",
              "channel": "sms"}
    contract = ["first-contact", "booking-link", "booking-confirmation",
                "reschedule-confirmation", "cancel-confirmation", "reminder", "preparation",
                "no-show-recovery", "waitlist-offer", "coordinator-callback"]
    for purpose in contract:
        assert set(TEMPLATES[purpose]) >= {"en", "es"}
        for lang in ("en", "es"):
            sms = render(purpose, "sms", lang, params)
            assert sms.language == lang and "Springfield Medical Group" in sms.text
            assert "STOP" in sms.text and sms.segments <= 2
            mail = render(purpose, "email", lang, params)
            assert "https://u" in mail.text and mail.subject and "<p>" in mail.html
    assert "C to confirm" in render("reminder", "sms", "en", params).text
    assert "YES" in render("waitlist-offer", "sms", "en", params).text


def test_language_fallback_says_so() -> None:
    rendered = render("first-contact", "sms", "fr", PARAMS)
    assert rendered.language == "en" and rendered.fell_back
    assert rendered.notes == ["no 'fr' translation of first-contact: sent in English"]
    spanish = render("first-contact", "sms", "es", PARAMS)
    assert not spanish.fell_back and "referencia" in spanish.text


def test_over_the_segment_limit_accents_are_replaced_or_the_text_refused() -> None:
    spanish = render("first-contact", "sms", "es", PARAMS, segment_limit=2)
    assert spanish.encoding == "GSM-7" and "accents replaced" in spanish.notes[-1]
    assert render("first-contact", "sms", "es", PARAMS, segment_limit=3).encoding == "UCS-2"
    with pytest.raises(TemplateError, match="segments"):
        render("first-contact", "sms", "en", {**PARAMS, "referrer": "Dr. " + "x" * 400},
               segment_limit=2)
    with pytest.raises(TemplateError, match="needs the parameter 'link'"):
        render("booking-link", "sms", "en", PARAMS)


def test_minimum_necessary_finds_clinical_words() -> None:
    text = render("first-contact", "sms", "en", PARAMS).text
    assert check_minimum_necessary(text, ["cardiology", "chest pain"]) == ""
    assert check_minimum_necessary("Your cardiology visit", ["Cardiology"]) == "cardiology"
    assert "cardiology" not in text.lower() and "referral from Dr. Rivera" in text


def test_contact_points_honour_rank_use_and_period() -> None:
    patient = {"telecom": [
        {"system": "phone", "value": "(212) 555-0199", "use": "home", "rank": 2},
        {"system": "phone", "value": "212-555-0123", "use": "mobile", "rank": 1},
        {"system": "phone", "value": "212-555-0100", "use": "old", "rank": 0},
        {"system": "phone", "value": "212-555-0111", "rank": 0,
         "period": {"end": "2024-01-01"}},
        {"system": "phone", "value": "212-555-0112", "rank": 0,
         "period": {"start": "2030-01-01T00:00:00Z"}},
        {"system": "phone", "value": "12", "rank": 3},
        {"system": "email", "value": "Pat@Example.ORG", "rank": 1},
        {"system": "email", "value": "not-an-address", "rank": 2}]}
    points, zones = contact_points(patient, "US", NOW)
    sms = [p for p in points if p.channel == "sms"]
    assert [p.address for p in sms if p.usable] == ["+12125550123", "+12125550199"]
    assert "not a valid phone number" in sms[-1].problem
    emails = [p for p in points if p.channel == "email"]
    assert emails[0].address == "Pat@example.org" and not emails[1].usable
    assert zones == ("America/New_York",)


def test_language_from_patient_communication() -> None:
    assert language({"communication": [
        {"language": {"coding": [{"code": "en"}]}},
        {"language": {"coding": [{"code": "es-MX"}]}, "preferred": True}]}) == "es"
    assert language({}) == "en"


@pytest.mark.parametrize(("address", "phone", "zones", "source"), [
    ({"state": "HI"}, (), ("Pacific/Honolulu",), "address"),
    ({"state": "New York", "country": "USA"}, (), ("America/New_York",), "address"),
    ({"state": "FL", "postalCode": "32501"}, (), ("America/Chicago",), "address"),
    ({"state": "FL"}, (), ("America/New_York", "America/Chicago"), "address"),
    ({"state": "TX", "postalCode": "79901"}, (), ("America/Denver",), "address"),
    ({"country": "CA", "state": "ON"}, ("America/Toronto",), ("America/Toronto",), "phone"),
    (None, ("America/Chicago",), ("America/Chicago",), "phone"),
    (None, tuple(f"Zone/{n}" for n in range(10)), ("America/New_York",), "default"),
])
def test_time_zone_sources(address: dict | None, phone: tuple[str, ...],
                           zones: tuple[str, ...], source: str) -> None:
    patient = {"address": [address]} if address else {}
    found = resolve(patient, phone, "America/New_York")
    assert (found.zones, found.source) == (zones, source)


def test_stated_time_zone_wins() -> None:
    patient = {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/timezone",
                              "valueCode": "America/Phoenix"}], "address": [{"state": "NY"}]}
    assert resolve(patient, (), "UTC").zones == ("America/Phoenix",)


def test_settings_refuse_hours_outside_the_calling_window(tmp_path: Path) -> None:
    with pytest.raises(OutreachConfigError, match="08:00"):
        from_settings({"quiet_hours": "07:30-21:00"}, tmp_path, "")
    with pytest.raises(OutreachConfigError, match="21:00"):
        from_settings({"quiet_hours": "09:00-22:00"}, tmp_path, "")
    with pytest.raises(OutreachConfigError, match="daily_cap"):
        from_settings({"daily_cap": 2}, tmp_path, "")
    with pytest.raises(OutreachConfigError, match="unknown keys"):
        from_settings({"quiet_hour": "09:00-20:00"}, tmp_path, "")
    config = from_settings({"quiet_hours": "09:00-20:00", "weekly_cap": 2}, tmp_path, "")
    assert (config.policy.quiet_start.hour, config.policy.quiet_end.hour) == (9, 20)
    assert config.policy.weekly_cap == 2 and not config.enabled


def test_default_ladders_and_configured_ones() -> None:
    urgent = choose(DEFAULT_LADDERS, "stat", "", "")
    assert [(r.channel, r.after) for r in urgent.rungs] == [
        ("sms", timedelta(0)), ("voice", timedelta(hours=2)), ("sms", timedelta(days=1)),
        ("task", timedelta(hours=24))]
    routine = choose(DEFAULT_LADDERS, "routine", "", "")
    assert [r.channel for r in routine.rungs] == ["sms", "email", "sms", "voice", "task",
                                                  "fail"]
    assert routine.rungs[-1].after == timedelta(days=21)
    configured = from_config([
        {"name": "routine", "version": 3, "priorities": ["routine"],
         "rungs": [{"channel": "sms", "after": "0"}]},
        {"name": "derm-acme", "version": 1, "priorities": ["routine"],
         "specialties": ["Dermatology"], "payers": ["Acme"],
         "rungs": [{"channel": "email", "after": "1h"}]}])
    assert choose(configured, "routine", "dermatology", "acme").name == "derm-acme"
    assert choose(configured, "routine", "cardiology", "acme").version == 3
    with pytest.raises(LadderError, match="no ladder"):
        choose(configured, "stat", "", "")
    with pytest.raises(LadderError, match="channel"):
        from_config([{"rungs": [{"channel": "fax"}]}])


def test_next_morning_rung_lands_on_local_nine() -> None:
    rung = Rung("sms", timedelta(days=1), at_local=datetime(2000, 1, 1, 9, 0).time())
    start = datetime(2025, 7, 1, 14, 0, tzinfo=UTC)  # 10:00 in New York
    assert rung.due(start, "America/New_York") == datetime(2025, 7, 2, 13, 0, tzinfo=UTC)
