"""The dashboard's query string and the report's period: whole weeks and months, the calendar's
ends, the value that selects referrals without a payer (or destination...)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from analytics.dashboard import NONE, read_filters
from analytics.outcomes import detected_range
from analytics.report import PeriodError, parse_period

TODAY = date(2026, 12, 4)


def test_a_month_view_covers_whole_months() -> None:
    filters, chosen = read_filters({"since": "2026-11-15", "until": "2026-11-20"}, TODAY)
    assert (filters.since, filters.until) == (date(2026, 11, 1), date(2026, 11, 30))
    assert (chosen["since"], chosen["until"]) == ("2026-11-01", "2026-11-30")


def test_a_week_view_covers_whole_weeks_monday_to_sunday() -> None:
    filters, _ = read_filters({"grain": "week", "since": "2026-11-04", "until": "2026-11-10"},
                              TODAY)
    assert (filters.since, filters.until) == (date(2026, 11, 2), date(2026, 11, 15))


def test_december_and_the_calendars_last_day_do_not_overflow() -> None:
    filters, _ = read_filters({"since": "2026-12-02", "until": "2026-12-03"}, TODAY)
    assert filters.until == date(2026, 12, 31)
    for grain in ("week", "month"):
        filters, _ = read_filters({"grain": grain, "since": "0001-01-01",
                                   "until": "9999-12-31"}, TODAY)
        assert filters.until == date.max
        low, high = detected_range(filters)
        assert low == datetime(1, 1, 1, tzinfo=UTC) and high is None


def test_none_selects_the_empty_value_and_empty_selects_all() -> None:
    filters, chosen = read_filters({"payer": NONE, "specialty": ""}, TODAY)
    assert filters.where == (("payer", ""),)
    assert chosen["payer"] == NONE and "specialty" not in chosen


@pytest.mark.parametrize("text", ["0000", "0000-01", "9999", "9999-12",
                                  "\uff12\uff10\uff12\uff16-11", "2026-\uff11\uff11"])
def test_a_period_outside_the_calendar_or_not_in_ascii_digits_is_refused(text: str) -> None:
    with pytest.raises(PeriodError):
        parse_period(text)


def test_the_calendars_ends_that_remain_are_periods() -> None:
    assert parse_period("0001").text == "0001"
    assert parse_period("9998-12").text == "9998-12"
