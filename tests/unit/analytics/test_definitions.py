"""The metric definitions (docs/metrics.md) over event histories, with values computed by hand.

Each history goes through the real lifecycle, so the event log is the one Refloop writes. The
cohort under test (October 2026) holds six referrals:

    A  detected 10-05 09:00, accepted +2 h (coordinator), first SMS +5 h, booked by the patient
       +24 h, visit +10 d, consult note +12 d (close-loop), receipt by the referrer +13 d
    B  withdrawn: the referring provider cancelled it at triage
    C  two no-shows, then a visit: booked +1 d, no-show +5 d, booked +6 d, no-show +10 d,
       booked +11 d, visit +20 d
    D  the consult note (and its receipt) recorded before the visit is marked complete: booked
       +2 d, note linked +8 d, received +8 d 12 h, visit marked +9 d
    F  declined at triage (not-covered)
    G  accepted, contacted, then failed (unreachable)

    referrals 6, withdrawn 1, denominator 5; visited A C D = 3; scheduled A C D = 3;
    report received A D = 2; no-shows 2 over 2 + 3 appointments.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from histories import (
    COORDINATOR,
    T0,
    D,
    H,
    History,
    october,
    referral_a,
    referral_b,
    referral_c,
    referral_d,
)

from analytics.metrics import (
    Histogram,
    bin_of,
    cohort,
    cohort_start,
    drop_key,
    duration_hours,
    percentile,
    spread,
    total,
    totals_of,
)
from referrals import closed_loop as loop


def test_the_milestones_of_one_referral() -> None:
    facts = referral_a().facts()
    assert facts.detected_at == T0 and facts.accepted_at == T0 + 2 * H
    assert facts.contacted_at == T0 + 5 * H and facts.scheduled_at == T0 + 24 * H
    assert facts.visit_at == T0 + 10 * D and facts.note_at == T0 + 12 * D
    assert facts.receipt_at == T0 + 13 * D
    assert (facts.stage, facts.open, facts.withdrawn, facts.dropped) == (
        "loop-closed", False, False, "")
    assert facts.ended_at == T0 + 12 * D
    assert (duration_hours(facts, "first_contact"), duration_hours(facts, "scheduling"),
            duration_hours(facts, "visit")) == (5.0, 24.0, 240.0)
    # 8 events: detect, accept, start-outreach, record-outreach, schedule, complete-visit,
    # close-loop, record-receipt; people did two (the coordinator's accept, the patient's
    # booking), Refloop the other six
    assert (facts.steps_person, facts.steps_refloop) == (2, 6)
    assert facts.referrer == "Practitioner/gp-1"
    assert facts.destination == "Organization/cardio-clinic"


def test_a_referral_cancelled_by_the_referrer_leaves_the_denominator() -> None:
    withdrawn = referral_b().facts()
    assert withdrawn.withdrawn and withdrawn.dropped == "cancelled"
    counts = totals_of(withdrawn)
    assert (counts.referrals, counts.withdrawn, counts.denominator) == (1, 1, 0)
    assert counts.completion_rate is None  # nothing left to complete
    cohort_totals = total(h.facts() for h in october())
    assert (cohort_totals.referrals, cohort_totals.withdrawn, cohort_totals.denominator) == (
        6, 1, 5)
    assert cohort_totals.completion_rate == pytest.approx(3 / 5)
    # with B counted, the rate would have been 3/6
    assert cohort_totals.completion_rate != pytest.approx(3 / 6)


def test_a_second_no_show_counts_twice_and_the_visit_once() -> None:
    facts = referral_c().facts()
    assert facts.no_shows == 2
    assert facts.scheduled_at == T0 + 1 * D  # time to scheduling: the first booking
    assert duration_hours(facts, "visit") == 20 * 24
    alone = totals_of(facts)
    assert alone.no_show_rate == pytest.approx(2 / 3)  # 2 no-shows, 1 visit
    assert alone.visited == 1 and alone.completion_rate == 1.0


def test_a_note_received_before_the_visit_is_marked_complete_dates_the_visit() -> None:
    facts = referral_d().facts()
    assert facts.note_at == T0 + 8 * D
    assert facts.receipt_at == T0 + 8 * D + 12 * H
    assert facts.visit_at == T0 + 8 * D  # a note cannot come before the visit it reports
    assert duration_hours(facts, "visit") == 8 * 24
    counts = totals_of(facts)
    assert (counts.visited, counts.notes, counts.receipts) == (1, 1, 1)
    assert counts.funnel() == [("detected", 1), ("accepted", 1), ("contacted", 1),
                               ("scheduled", 1), ("visited", 1), ("report received", 1)]


def test_the_cohort_rates_and_the_funnel() -> None:
    counts = total(h.facts() for h in october())
    assert counts.scheduling_rate == pytest.approx(3 / 5)
    assert counts.loop_closure_rate == pytest.approx(2 / 5)
    assert counts.no_show_rate == pytest.approx(2 / 5)  # 2 no-shows; 2 + 3 appointments
    # accepted: A C D G (F was declined at triage, B withdrawn); contacted: A G, and C D
    # booked by the clinic
    assert counts.funnel() == [("detected", 6), ("accepted", 4), ("contacted", 4),
                               ("scheduled", 3), ("visited", 3), ("report received", 2)]
    # automation: A 6 of 8; B 1 of 3; C 4 of 8; D 4 of 6; F 1 of 3; G 4 of 5
    assert counts.steps_refloop == 20 and counts.steps_person == 13
    assert counts.automation_share == pytest.approx(20 / 33)


def test_where_referrals_fall_out_with_their_reasons() -> None:
    keys = [drop_key(h.facts()) for h in october()]
    assert keys == [None, ("detected", "cancelled", "referrer-cancelled"), None, None,
                    ("detected", "declined", "not-covered"),
                    ("contacted", "failed", "unreachable")]


def test_durations_medians_and_90th_percentiles() -> None:
    facts = [h.facts() for h in october()]
    visits = sorted(v for f in facts if (v := duration_hours(f, "visit")) is not None)
    assert visits == [192.0, 240.0, 480.0]  # D 8 d, A 10 d, C 20 d
    result = spread(visits)
    assert result.median == 240.0
    assert result.p90 == pytest.approx(240 + 0.8 * 240)  # rank 1.8: 240 + 0.8 * (480 - 240)
    contact = sorted(v for f in facts if (v := duration_hours(f, "first_contact")) is not None)
    # A 5 h, G 2 h after its detection, C and D never contacted by message
    assert contact == [2.0, 5.0]
    assert percentile([], 50) is None
    assert percentile([7.0], 90) == 7.0


def test_authorization_turnaround() -> None:
    h = History.detected("p", T0)
    h.step("accept", T0 + H, actor=COORDINATOR)
    h.step("request-authorization", T0 + 2 * H, payer="Payer A", auth_state="submitted")
    h.step("amend", T0 + 5 * H, auth_state="pended")
    h.step("authorize", T0 + 32 * H, auth_state="approved")
    facts = h.facts()
    assert duration_hours(facts, "authorization") == 30.0
    denied = History.detected("q", T0)
    denied.step("accept", T0 + H, actor=COORDINATOR)
    denied.step("request-authorization", T0 + 2 * H, auth_state="submitted")
    denied.step("hold", T0 + 74 * H, reason="auth-denied", auth_state="denied")
    assert duration_hours(denied.facts(), "authorization") == 72.0


def test_referrals_spanning_cohorts_count_in_the_cohort_of_their_detection() -> None:
    late = datetime(2026, 10, 30, 16, 0, tzinfo=UTC)  # a Friday, ISO week 44
    h = History.detected("e", late)
    h.step("accept", late + H, actor=COORDINATOR)
    h.step("schedule", late + 2 * D, actor=COORDINATOR)  # November 1st
    h.step("complete-visit", late + 6 * D)  # November 5th, week 45
    facts = h.facts()
    assert cohort(facts.detected_at, "month") == "2026-10"
    assert cohort(facts.detected_at, "week") == "2026-W44"
    assert cohort_start(facts.detected_at, "week") == "2026-10-26"
    assert cohort_start(facts.detected_at, "month") == "2026-10-01"
    assert cohort(facts.visit_at, "month") == "2026-11"  # visited the month after...
    october_totals = total(f for f in [facts, *(x.facts() for x in october())]
                           if cohort(f.detected_at, "month") == "2026-10")
    assert (october_totals.referrals, october_totals.visited) == (7, 4)  # ...counted in October
    assert cohort(datetime(2027, 1, 1, tzinfo=UTC), "week") == "2026-W53"


def test_the_histogram_percentile_stays_within_its_bin() -> None:
    values = [0.5, 3.2, 5.0, 26.0, 49.0, 75.0, 200.0, 240.0, 480.0, 2000.0, 9000.0]
    histogram = Histogram()
    for value in values:
        histogram.add_hours(value)
    assert histogram.n == len(values)
    for p in (50, 90):
        exact = percentile(values, p)
        approximate = histogram.percentile(p)
        assert exact is not None and approximate is not None
        width = 24.0 if exact < 60 * 24 else 120.0
        assert abs(approximate - exact) <= width
    assert bin_of(0) == 0 and bin_of(47.9) == 47 and bin_of(48) == 48 and bin_of(1e9) == bin_of(
        180 * 24)
    other = Histogram()
    other.merge(histogram)
    other.merge(histogram, sign=-1)
    assert other.counts == {} and other.percentile(50) is None


def clock(h: History, action: str, at: datetime, program: str = "team", **extra: Any) -> None:
    h.step(action, at, clock={"program": program, **({"at": at.isoformat()}
                                                       if action != loop.START_CLOCK else {}),
                              **extra})


def test_program_clocks_met_on_time_late_or_missed() -> None:
    def teamed(rid: str, days: int) -> History:
        h = History.detected(rid, T0)
        h.step("accept", T0 + H, actor=COORDINATOR)
        clock(h, loop.START_CLOCK, T0 + H, goal="visit", started_at=T0.isoformat(),
              due_at=(T0 + days * D).isoformat())
        return h

    on_time = teamed("t1", 30)
    on_time.step("schedule", T0 + 2 * D, actor=COORDINATOR)
    on_time.step("complete-visit", T0 + 10 * D)
    clock(on_time, loop.MEET_CLOCK, T0 + 10 * D)
    late = teamed("t2", 5)
    clock(late, loop.MISS_CLOCK, T0 + 5 * D)
    clock(late, loop.MEET_CLOCK, T0 + 8 * D)  # a missed clock may still be met, late
    missed = teamed("t3", 5)
    clock(missed, loop.MISS_CLOCK, T0 + 5 * D)
    feedback = History.detected("s1", T0)
    clock(feedback, loop.START_CLOCK, T0, program="asm", goal="report",
          started_at=T0.isoformat(), due_at=(T0 + 14 * D).isoformat())
    counts = total(h.facts() for h in (on_time, late, missed, feedback))
    assert (counts.team_started, counts.team_on_time, counts.team_late,
            counts.team_missed) == (3, 1, 1, 1)
    assert counts.clock_on_time_rate("team") == pytest.approx(1 / 3)
    assert (counts.asm_started, counts.asm_on_time, counts.asm_late, counts.asm_missed) == (
        1, 0, 0, 0)
    assert counts.clock_on_time_rate("asm") is None  # running, not ended
    assert late.facts().team_met_at == T0 + 8 * D and late.facts().team_missed_at == T0 + 5 * D
