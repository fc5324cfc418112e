"""The facade's query parser: the dates, counts and offsets the edge cases name, and property
tests: any parameters give a TaskQuery within range or an InboundError, never a crash."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capability.search import MAX_NUMBER, parse_date_bound, parse_task_query
from referrals.errors import InboundError


@pytest.mark.parametrize("value", ["9999", "9999-12", "gt9999-12-31",
                                   "le9999-12-31T23:59:59-12:00", "ge0001-01-01T00:00:00+14:00",
                                   "9999-12-31T23:59:59.999999Z", "2026-02-30", "2026-13",
                                   "20260101", "2026-W01", "\u0662\u0660\u0662\u0666"])
def test_out_of_range_or_malformed_dates_are_refused(value: str) -> None:
    with pytest.raises(InboundError) as raised:
        parse_date_bound(value)
    assert raised.value.status == 400 and raised.value.expression == "_lastUpdated"


@pytest.mark.parametrize("value,start,end", [
    ("2026", datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
    ("ge2026-03-01T10:00:00+02:00", datetime(2026, 3, 1, 8, tzinfo=UTC),
     datetime(2026, 3, 1, 8, 0, 1, tzinfo=UTC)),
    ("9998", datetime(9998, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC)),
    ("0001-01-02T00:00:00+14:00", datetime(1, 1, 1, 10, tzinfo=UTC),
     datetime(1, 1, 1, 10, 0, 1, tzinfo=UTC)),
])
def test_dates_in_range(value: str, start: datetime, end: datetime) -> None:
    bound = parse_date_bound(value)
    assert (bound.start, bound.end) == (start, end)


@pytest.mark.parametrize("name", ["_offset", "_count"])
@pytest.mark.parametrize("value", ["99999999999999999999", str(2 ** 63), str(MAX_NUMBER + 1),
                                   "-1", "+5", "1e3", "\u0663", "", " 5"])
def test_counts_and_offsets_out_of_range(name: str, value: str) -> None:
    with pytest.raises(InboundError) as raised:
        parse_task_query([(name, value)])
    assert raised.value.expression == name


NAMES = st.sampled_from(["_id", "status", "business-status", "patient", "owner", "focus",
                         "_lastUpdated", "_count", "_offset", "_sort", "_format", "bogus",
                         "status:not"]) | st.text(max_size=12)
DATES = st.from_regex(r"(eq|ge|gt|le|lt|ne)?[0-9]{4}(-[0-9]{2}(-[0-9]{2}(T[0-9]{2}:[0-9]{2}"
                      r"(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?",
                      fullmatch=True)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(NAMES, st.text(max_size=30) | DATES | st.integers().map(str)),
                max_size=6))
def test_any_parameters_parse_or_are_refused(args: list[tuple[str, str]]) -> None:
    try:
        query = parse_task_query(args)
    except InboundError as exc:  # 406 only for a _format we do not serve
        assert (exc.status == 400 or (exc.status, exc.expression) == (406, "_format")) \
            and str(exc)
        return
    assert 0 <= query.count <= 500 and 0 <= query.offset <= MAX_NUMBER
    for bound in query.last_updated:
        assert bound.start < bound.end and bound.start.tzinfo is not None


@settings(max_examples=500, deadline=None)
@given(DATES)
def test_any_date_shape_parses_within_years_1_to_9999_or_is_refused(value: str) -> None:
    try:
        bound = parse_date_bound(value)
    except InboundError:
        return
    assert 1 <= bound.start.year <= 9999 and bound.end.year <= 9999
