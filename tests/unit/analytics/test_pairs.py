"""Pair cells of the cube: every referral counts in one cell per pair of dimensions (by month),
and a pair's value is found by either of its values whatever characters they hold."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from histories import october

from analytics.contribution import (
    DEADLINES,
    DIMENSIONS,
    PAIRS,
    cube_keys,
    day_number,
    ordered_pair,
    pair_prefix,
    pair_suffix,
    pair_value,
    parts_of,
)

AWKWARD = ["cardiology", 'a "quoted", value', "x,y", '["a","b"]', "back\\slash", "", "é/ü"]


def test_a_pair_value_is_found_by_its_first_or_second_value_only() -> None:
    for a in AWKWARD:
        for b in AWKWARD:
            value = pair_value(a, b)
            for other in AWKWARD:
                assert value.startswith(pair_prefix(other)) == (other == a), (a, b, other)
                assert value.endswith(pair_suffix(other)) == (other == b), (a, b, other)


def test_every_referral_counts_once_per_pair_by_month() -> None:
    facts = october()[0].facts()
    keys = cube_keys(facts)
    pairs = [k for k in keys if "+" in k[1]]
    assert len(PAIRS) == len(DIMENSIONS) * (len(DIMENSIONS) - 1) // 2
    assert [k[1] for k in pairs] == [f"{a}+{b}" for a, b in PAIRS]
    assert {k[0] for k in pairs} == {"m"} and len(set(keys)) == len(keys)
    assert ("m", "specialty+priority", pair_value(facts.specialty, facts.priority),
            "2026-10-01") in pairs


def test_filters_in_either_order_make_the_same_pair() -> None:
    one = ordered_pair((("priority", "routine"), ("specialty", "cardiology")))
    other = ordered_pair((("specialty", "cardiology"), ("priority", "routine")))
    assert one == other == (("specialty", "cardiology"), ("priority", "routine"))
    assert ordered_pair((("specialty", "a"), ("specialty", "b"))) is None
    assert ordered_pair((("specialty", "a"),)) is None


def test_an_open_referral_counts_its_deadline_day() -> None:
    for history in october():
        facts = history.facts()
        _counts, histograms = parts_of(facts)
        if facts.open and facts.deadline is not None:
            assert histograms[DEADLINES] == {day_number(facts.deadline): 1}
        else:
            assert DEADLINES not in histograms
