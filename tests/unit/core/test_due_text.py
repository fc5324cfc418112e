"""How deadlines read: hours up to 48, whole days beyond (a referral 904 hours overdue is
"overdue 38 d", not "overdue 904h")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from referrals.sla import describe_due

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(("hours", "text", "overdue"), [
    (5, "5 h", False), (48, "48 h", False), (49, "2 d", False), (24 * 10, "10 d", False),
    (-3, "overdue 3 h", True), (-48, "overdue 48 h", True), (-50, "overdue 2 d", True),
    (-904, "overdue 38 d", True),
])
def test_hours_then_days(hours: float, text: str, overdue: bool) -> None:
    assert describe_due(NOW + timedelta(hours=hours), NOW) == (text, overdue)


def test_no_deadline() -> None:
    assert describe_due(None, NOW) == ("-", False)
