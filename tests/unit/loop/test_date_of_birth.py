"""A date of birth typed with absurd numbers is simply not a date (never a server error)."""

from __future__ import annotations

from datetime import date

import pytest

from loop.web import _date_of_birth as loop_date
from scheduling.web import _date_of_birth as scheduling_date


@pytest.mark.parametrize("parse", [loop_date, scheduling_date])
@pytest.mark.parametrize("field", ["day", "month", "year"])
def test_huge_numbers_are_not_a_date(parse, field) -> None:
    form = {"day": "17", "month": "1", "year": "1958", field: "999999999999"}
    assert parse(form) is None
    assert parse({"day": "17", "month": "1", "year": "1958"}) == date(1958, 1, 17)
