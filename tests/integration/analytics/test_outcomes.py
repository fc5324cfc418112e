"""The dashboard's figures from the cube and from the facts agree with each other and with the
definitions computed in memory; the SQL spelling of the definitions counts the same referrals;
each number's referrals can be listed."""

from __future__ import annotations

import random
import sys
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "analytics"))

from histories import History, random_history, replay

from analytics import dashboard
from analytics.contribution import DIMENSIONS, PAIRS
from analytics.facts import Facts
from analytics.metrics import STEPS, Totals, cohort_start, drop_key, is_overdue, total, totals_of
from analytics.outcomes import Filters, dimension_menus, outcomes, referrals_behind
from analytics.rollup import Rollup
from refloop.services import Services

START = datetime(2026, 8, 3, 8, 0, tzinfo=UTC)
NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def world(services: Services) -> tuple[Services, list[Facts]]:
    rng = random.Random(20261201)
    histories: list[History] = []
    for i in range(80):
        h = random_history(rng, f"r{i:03d}", START + timedelta(hours=29 * i))
        histories.append(h)
        replay(services.referrals, h)
    Rollup(services.db).catch_up()
    facts = [h.facts() for h in histories]
    return services, facts


def test_the_cube_and_the_facts_give_the_same_figures(world: tuple[Services, list[Facts]]
                                                     ) -> None:
    services, facts = world
    for grain in ("month", "week"):
        plain = outcomes(services.db, Filters(grain=grain), NOW)
        # the same view through the facts: a tenant restriction that keeps everything
        exact = outcomes(services.db, Filters(grain=grain, sources=("test",)), NOW)
        assert not plain.exact and exact.exact
        assert plain.totals == exact.totals == total(facts)
        other_tenant = outcomes(services.db, Filters(grain=grain, sources=("fhir|x",)), NOW)
        assert other_tenant.totals.referrals == 0 and other_tenant.cohorts == []
        assert [(c.label, c.totals) for c in plain.cohorts] == \
            [(c.label, c.totals) for c in exact.cohorts]
        assert plain.dropoff == exact.dropoff
        assert plain.breakdown == exact.breakdown
        assert plain.overdue == exact.overdue == sum(is_overdue(f, NOW) for f in facts)
        for name, measured in exact.spreads.items():
            approximate = plain.spreads[name]
            assert approximate.n == measured.n
            if measured.median is not None:
                assert approximate.median is not None
                assert abs(approximate.median - measured.median) <= (
                    1.0 if measured.median < 48 else 24.0 if measured.median < 1440 else 120.0)
    # (one world for several checks: replaying it is most of these tests' time)
    overdue_counts_the_days_before_today_from_the_cube_and_today_from_the_facts(world)


def overdue_counts_the_days_before_today_from_the_cube_and_today_from_the_facts(
        world: tuple[Services, list[Facts]]) -> None:
    services, facts = world
    deadlines = sorted(f.deadline for f in facts if f.open and f.deadline is not None)
    assert len(deadlines) >= 3
    for deadline in deadlines[:: max(1, len(deadlines) // 3)]:
        # just before and just after a deadline, on its own day: the facts decide
        for now in (deadline - timedelta(seconds=1), deadline + timedelta(seconds=1),
                    deadline + timedelta(days=1)):
            expected = sum(is_overdue(f, now) for f in facts)
            for view in (Filters(), Filters(where=(("priority", "routine"),)),
                         Filters(sources=("test",)),
                         Filters(since=date(2026, 9, 1), until=date(2026, 10, 31))):
                assert outcomes(services.db, view, now).overdue == \
                    sum(is_overdue(f, now) for f in facts
                        if all(getattr(f, d) == v for d, v in view.where)
                        and (view.since is None or f.detected_at.month in (9, 10))), (view, now)
            assert expected >= 1 or now < deadline


def test_one_or_two_filters_read_the_cube_more_read_the_facts(
        world: tuple[Services, list[Facts]]) -> None:
    services, facts = world
    one = outcomes(services.db, Filters(where=(("specialty", "cardiology"),)), NOW)
    assert not one.exact
    assert one.totals == total(f for f in facts if f.specialty == "cardiology")
    # the breakdown by referrer of the cardiology referrals comes from the pair cells
    expected: dict[str, Totals] = {}
    for f in facts:
        if f.specialty == "cardiology":
            expected.setdefault(f.referrer, Totals()).add(totals_of(f))
    assert dict(one.breakdown) == expected
    two = outcomes(services.db, Filters(where=(("specialty", "cardiology"),
                                               ("priority", "routine"))), NOW)
    assert not two.exact
    assert two.totals == total(f for f in facts
                               if f.specialty == "cardiology" and f.priority == "routine")
    by_week = outcomes(services.db, Filters(grain="week", where=(("priority", "routine"),
                                                                 ("specialty", "cardiology"))),
                       NOW)
    assert by_week.exact and by_week.totals == two.totals
    ranged = outcomes(services.db, Filters(since=date(2026, 9, 1), until=date(2026, 9, 30)),
                      NOW)
    assert [c.label for c in ranged.cohorts] == ["2026-09"]
    assert ranged.totals == total(f for f in facts if f.detected_at.month == 9)
    every_pair_of_filters_agrees_with_the_facts(world)


def every_pair_of_filters_agrees_with_the_facts(world: tuple[Services, list[Facts]]) -> None:
    services, facts = world
    for index, (a, b) in enumerate(PAIRS):
        # the values of one referral, the filters given in the other order
        sample = facts[index * 7]
        where = ((b, getattr(sample, b)), (a, getattr(sample, a)))
        cube = outcomes(services.db, Filters(where=where, breakdown=b), NOW)
        exact = outcomes(services.db, Filters(where=where, breakdown=b, sources=("test",)), NOW)
        assert not cube.exact and exact.exact
        assert cube.totals == exact.totals == total(
            f for f in facts if all(getattr(f, dim) == value for dim, value in where))
        assert cube.totals.referrals >= 1
        assert [(c.label, c.totals) for c in cube.cohorts] == \
            [(c.label, c.totals) for c in exact.cohorts]
        assert cube.dropoff == exact.dropoff and cube.breakdown == exact.breakdown
        assert {n: s.n for n, s in cube.spreads.items()} == \
            {n: s.n for n, s in exact.spreads.items()}
        for dim, by in ((a, b), (b, a)):  # one filter, broken down by the other dimension
            one = Filters(where=((dim, getattr(sample, dim)),), breakdown=by)
            tenant = Filters(where=one.where, breakdown=by, sources=("test",))
            assert outcomes(services.db, one, NOW).breakdown == \
                outcomes(services.db, tenant, NOW).breakdown


def test_each_number_lists_its_referrals(world: tuple[Services, list[Facts]]) -> None:
    services, facts = world
    view = Filters()
    for part in ("referrals", "withdrawn", "accepted", "contacted", "scheduled", "visited",
                 "notes", "receipts", "open", "auth_requested", "auth_decided"):
        listed = {r.referral_id for r in referrals_behind(services.db, view, part, limit=500,
                                                          now=NOW)}
        expected = {f.referral_id for f in facts if getattr(totals_of(f), part)}
        assert listed == expected, part
    overdue = {r.referral_id for r in referrals_behind(services.db, view, "overdue", now=NOW,
                                                       limit=500)}
    assert overdue == {f.referral_id for f in facts if is_overdue(f, NOW)}
    for step, outcome, reason, n in outcomes(services.db, view, NOW).dropoff:
        listed = {r.referral_id for r in referrals_behind(
            services.db, view, f"dropped:{step}:{outcome}:{reason}", limit=500, now=NOW)}
        assert len(listed) == n
        assert listed == {f.referral_id for f in facts if drop_key(f) == (step, outcome, reason)}
    assert {s for s, *_ in outcomes(services.db, view, NOW).dropoff} <= set(STEPS)
    # one cohort, a page at a time
    september = cohort_start(datetime(2026, 9, 10, tzinfo=UTC), "month")
    first = referrals_behind(services.db, view, "referrals", cohort_start_day=september, limit=5)
    second = referrals_behind(services.db, view, "referrals", cohort_start_day=september,
                              limit=5, after=(first[-1].detected_at, first[-1].referral_id))
    assert len(first) == 5 and first[-1].detected_at <= second[0].detected_at
    assert not {r.referral_id for r in first} & {r.referral_id for r in second}
    assert all(r.detected_at.month == 9 for r in first + second)


def test_the_filter_menus_take_one_statement(world: tuple[Services, list[Facts]]) -> None:
    """Every menu (the values of each dimension, most referrals first) from one statement;
    they took one per dimension (5)."""
    services, facts = world
    statements: list[str] = []
    engine = services.db.engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        menus = dimension_menus(services.db)
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1
    assert list(menus) == list(DIMENSIONS)
    for dim in DIMENSIONS:
        counted = Counter(getattr(f, dim) for f in facts)
        assert menus[dim] == sorted(counted, key=lambda v: (-counted[v], v)), dim
    assert dimension_menus(services.db, limit=1)["priority"] == menus["priority"][:1]


def test_the_lists_behind_the_numbers_lead_back_to_the_same_breakdown(
        world: tuple[Services, list[Facts]]) -> None:
    services, _facts = world
    args = {"since": "2026-08-01", "until": "2026-11-30", "by": "payer"}
    shown = dashboard.view(services.db, args, NOW)
    behind = dict(parse_qsl(shown["headline"][0]["link"], keep_blank_values=True))
    assert behind["by"] == "payer"
    listed = dashboard.referrals(services.db, behind, NOW)
    assert dict(parse_qsl(listed["back"]))["by"] == "payer"
    row = shown["breakdown"]["rows"][0]["cells"][0]["link"]
    assert dict(parse_qsl(row, keep_blank_values=True))["by"] == "payer"


@pytest.mark.parametrize(("grain", "cohort"), [("week", "9999-12-27"), ("month", "9999-12-01")])
def test_the_calendars_last_cohort_lists_without_overflow(
        world: tuple[Services, list[Facts]], grain: str, cohort: str) -> None:
    """The last week or month of year 9999 has no end to compare with (it raised an
    OverflowError, a 500 on the dashboard's lists); it runs to the calendar's end."""
    services, _facts = world
    listed = dashboard.referrals(services.db, {
        "grain": grain, "since": "0001-01-01", "until": "9999-12-31", "part": "visited",
        "cohort": cohort}, NOW)
    assert listed["cohort"] == cohort and listed["rows"] == []
