"""The rule engine as a pure function: quiet hours at their edges and across zones and DST,
caps across midnight and week boundaries, consent, expiry, channel fall-through."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from outreach.config import Policy
from outreach.contacts import ContactPoint
from outreach.rules import (
    DEFER,
    SEND,
    SKIP,
    Ask,
    Consent,
    PatientView,
    Sent,
    Situation,
    consent_state,
    decide,
)

NY, HONOLULU = "America/New_York", "Pacific/Honolulu"
SMS = ContactPoint("sms", "+12125550123", "212-555-0123", 1, "mobile")
EMAIL = ContactPoint("email", "pat@example.org", "pat@example.org", 2, "home")
VOICE = ContactPoint("voice", "+12125550123", "212-555-0123", 1, "mobile")


def local(zone: str, *parts: int) -> datetime:
    return datetime(*parts, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def patient(zone: str = NY, *contacts: ContactPoint) -> PatientView:
    return PatientView(contacts or (SMS, EMAIL, VOICE), (zone,), "address")


NO_CONSENT, DEFAULT_POLICY, OPEN = Consent(), Policy(), Situation()


def run(now: datetime, *, who: PatientView | None = None, ask: Ask | None = None,
        consent: Consent = NO_CONSENT, history: tuple[Sent, ...] = (),
        policy: Policy = DEFAULT_POLICY, situation: Situation = OPEN):
    return decide(situation, who or patient(), ask or Ask("first-contact", ("sms",)), consent,
                  history, policy, now)


@pytest.mark.parametrize(("hour", "minute", "outcome", "rule"), [
    (7, 59, DEFER, "quiet-hours"),
    (8, 0, SEND, "allowed"),
    (20, 59, SEND, "allowed"),
    (21, 0, DEFER, "quiet-hours"),
])
def test_quiet_hours_edges_in_local_time(hour: int, minute: int, outcome: str,
                                         rule: str) -> None:
    decision = run(local(NY, 2025, 7, 1, hour, minute))
    assert (decision.outcome, decision.rule) == (outcome, rule)
    if outcome == DEFER:
        opens = decision.not_before.astimezone(ZoneInfo(NY))
        assert opens.time() == time(8, 0)
        assert opens.date() == (datetime(2025, 7, 1).date() if hour < 8
                                else datetime(2025, 7, 2).date())


def test_same_instant_honolulu_waits_new_york_sends() -> None:
    instant = local(NY, 2025, 7, 1, 10, 0)  # 04:00 in Honolulu
    assert run(instant).outcome == SEND
    hawaii = run(instant, who=patient(HONOLULU, SMS))
    assert (hawaii.outcome, hawaii.rule) == (DEFER, "quiet-hours")
    assert hawaii.not_before == local(HONOLULU, 2025, 7, 1, 8, 0)
    assert "HST" in hawaii.reason and "Pacific/Honolulu" in hawaii.reason


def test_dst_spring_forward_and_fall_back() -> None:
    # 2025-03-09: 02:00 EST jumps to 03:00 EDT. 21:30 on the 8th defers to 08:00 EDT on the 9th.
    spring = run(local(NY, 2025, 3, 8, 21, 30))
    assert spring.not_before == datetime(2025, 3, 9, 12, 0, tzinfo=UTC)  # 08:00 EDT = 12:00Z
    # 2025-11-02: 02:00 EDT falls back to 01:00 EST. 21:30 on the 1st defers to 08:00 EST.
    fall = run(local(NY, 2025, 11, 1, 21, 30))
    assert fall.not_before == datetime(2025, 11, 2, 13, 0, tzinfo=UTC)  # 08:00 EST = 13:00Z
    # the ambiguous 01:30 of 2 November is night in both readings
    ambiguous = datetime(2025, 11, 2, 1, 30, fold=1, tzinfo=ZoneInfo(NY)).astimezone(UTC)
    assert run(ambiguous).rule == "quiet-hours"


def test_no_time_zone_information_uses_the_default() -> None:
    from outreach.timezones import resolve

    zones = resolve({"resourceType": "Patient"}, (), "America/Chicago")
    assert (zones.zones, zones.source) == (("America/Chicago",), "default")
    who = PatientView((SMS,), zones.zones, zones.source)
    decision = run(local("America/Chicago", 2025, 7, 1, 7, 30), who=who)
    assert decision.not_before == local("America/Chicago", 2025, 7, 1, 8, 0)


def test_several_candidate_zones_must_all_be_open() -> None:
    who = PatientView((SMS,), ("America/Chicago", "America/Denver"), "address")
    decision = run(local("America/Chicago", 2025, 7, 1, 8, 30), who=who)  # 07:30 in Denver
    assert decision.not_before == local("America/Denver", 2025, 7, 1, 8, 0)


def test_email_ignores_the_calling_window() -> None:
    decision = run(local(NY, 2025, 7, 1, 23, 0), ask=Ask("first-contact", ("email",)))
    assert (decision.outcome, decision.channel) == (SEND, "email")


def test_evening_window_for_later_routine_texts() -> None:
    decision = run(local(NY, 2025, 7, 1, 10, 0), ask=Ask("first-contact", ("sms",), "evening"))
    assert decision.rule == "evening-window"
    assert decision.not_before == local(NY, 2025, 7, 1, 17, 0)


def test_daily_cap_across_midnight() -> None:
    sent = (Sent("first-contact", "sms", local(NY, 2025, 7, 1, 20, 0)),)
    same_day = run(local(NY, 2025, 7, 1, 20, 30), history=sent)
    assert (same_day.outcome, same_day.rule) == (DEFER, "daily-limit")
    assert same_day.not_before == local(NY, 2025, 7, 2, 8, 0)
    next_day = run(local(NY, 2025, 7, 2, 8, 0), history=sent)
    assert next_day.outcome == SEND
    other_purpose = run(local(NY, 2025, 7, 1, 20, 30), history=sent,
                        ask=Ask("reminder", ("sms",)))
    assert other_purpose.outcome == SEND
    # counted per channel by default; across channels when configured
    assert run(local(NY, 2025, 7, 1, 20, 30), history=sent,
               ask=Ask("first-contact", ("voice",))).outcome == SEND
    assert run(local(NY, 2025, 7, 1, 20, 30), history=sent,
               ask=Ask("first-contact", ("voice",)),
               policy=Policy(caps_across_channels=True)).rule == "daily-limit"


def test_weekly_cap_across_a_week_boundary() -> None:
    # Friday, Saturday, Sunday (a calendar week ends on Sunday); Monday is still within 7 days
    sent = tuple(Sent("first-contact", "sms", local(NY, 2025, 7, d, 10, 0)) for d in (4, 5, 6))
    monday = run(local(NY, 2025, 7, 7, 10, 0), history=sent)
    assert (monday.outcome, monday.rule) == (DEFER, "weekly-limit")
    assert monday.not_before == local(NY, 2025, 7, 11, 8, 0)  # Friday's send leaves the window
    assert run(local(NY, 2025, 7, 11, 8, 0), history=sent).outcome == SEND
    lower = run(local(NY, 2025, 7, 6, 12, 0), history=sent[:1], policy=Policy(weekly_cap=1))
    assert lower.rule == "weekly-limit"


def test_consent_and_contact_points_choose_the_channel() -> None:
    ask = Ask("first-contact", ("sms", "email"))
    opted = run(local(NY, 2025, 7, 1, 10, 0), ask=ask, consent=Consent(frozenset({"sms"})))
    assert (opted.outcome, opted.channel) == (SEND, "email")
    assert "sms: the patient opted out" in opted.reason
    nothing = run(local(NY, 2025, 7, 1, 10, 0), ask=ask,
                  consent=Consent(frozenset({"sms", "email"})))
    assert (nothing.outcome, nothing.rule) == (SKIP, "opted-out")
    blocked = run(local(NY, 2025, 7, 1, 10, 0), consent=Consent(blocked=frozenset(
        {SMS.address})))
    assert (blocked.outcome, blocked.rule) == (SKIP, "opted-out")
    failing = run(local(NY, 2025, 7, 1, 10, 0), consent=Consent(failing=frozenset(
        {f"sms:{SMS.address}"})))
    assert (failing.outcome, failing.rule) == (SKIP, "no-contact")
    landline = ContactPoint("sms", "", "555", 1, "home", "a fixed line cannot take SMS")
    bad = run(local(NY, 2025, 7, 1, 10, 0), who=patient(NY, landline))
    assert bad.rule == "no-contact" and "fixed line" in bad.reason
    none = run(local(NY, 2025, 7, 1, 10, 0), who=patient(NY, EMAIL))
    assert none.rule == "no-contact" and "no contact point" in none.reason


def test_answers_go_out_even_after_opt_out_and_at_night() -> None:
    decision = run(local(NY, 2025, 7, 1, 23, 30), consent=Consent(frozenset({"sms"}),
                                                                  frozenset({SMS.address})),
                   ask=Ask("opt-out-confirmation", ("sms",), answer=True))
    assert decision.outcome == SEND


def test_closed_referral_stopped_plan_and_expiry() -> None:
    now = local(NY, 2025, 7, 1, 10, 0)
    assert run(now, situation=Situation(open=False)).rule == "referral-closed"
    assert run(now, situation=Situation(stopped="booked")).rule == "referral-closed"
    assert run(now, ask=Ask("reminder", ("sms",), expires_at=now)).rule == "expired"
    night = local(NY, 2025, 7, 1, 22, 0)
    late = run(night, ask=Ask("reminder", ("sms",), expires_at=night + timedelta(hours=2)))
    assert (late.outcome, late.rule) == (SKIP, "expired")


def test_start_after_stop_and_stop_after_start() -> None:
    t = [datetime(2025, 7, 1, 10, m, tzinfo=UTC) for m in range(4)]
    assert consent_state([(t[0], "sms", "opt-out")]) == {"sms"}
    assert consent_state([(t[0], "sms", "opt-out"), (t[1], "sms", "opt-in")]) == frozenset()
    assert consent_state([(t[1], "sms", "opt-in"), (t[0], "sms", "opt-out")]) == frozenset()
    assert consent_state([(t[0], "sms", "opt-in"), (t[1], "sms", "opt-out")]) == {"sms"}
    assert consent_state([(t[0], "all", "opt-out"), (t[1], "email", "opt-in")]) == \
        {"sms", "voice"}
