"""JSON columns are written with orjson (referrals/store/database.py `dumps`): as the json module
reads them, and a value orjson would write changed, or cannot write, is refused clearly."""

from __future__ import annotations

import json
from typing import Any

import pytest

from referrals.errors import InboundError
from referrals.store.database import UnstorableValue, dumps


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def test_a_resource_is_written_as_the_json_module_reads_it() -> None:
    body = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Ó Súilleabháin"}],
            "active": True, "multipleBirthInteger": 2, "deceasedBoolean": None,
            "x": (1, 2.5), "big": 2**64 - 1}
    assert json.loads(dumps(body)) == {**body, "x": [1, 2.5]}


def test_keys_that_are_not_strings_are_written_as_strings() -> None:
    assert json.loads(dumps({1: "one", "nested": {2: [3], False: 0, None: 1}})) == {
        "1": "one", "nested": {"2": [3], "false": 0, "null": 1}}


@pytest.mark.parametrize("value, why", [
    ({"v": float("nan")}, "NaN or infinite"),
    ({"v": [1, {"w": float("-inf")}], "n": None}, "NaN or infinite"),
    ({1: "a", "1": "b"}, "the same once written as strings"),
    ({"x": {True: 1, "true": 2}}, "the same once written as strings"),
    ({"v": 2**64}, "64-bit"),
    ({2**64: "v"}, "64-bit"),
    ({"v": "a\ud800"}, "surrogates"),
    ({"v": nested(300)}, "Recursion"),
    ({"tags": {"a", "b"}}, "not JSON serializable"),
], ids=["nan", "nested-inf", "int-and-str-key", "bool-and-str-key", "big-int", "big-int-key",
        "surrogate", "too-deep", "set"])
def test_a_value_that_would_be_changed_or_cannot_be_written_is_refused(value: Any,
                                                                        why: str) -> None:
    with pytest.raises(UnstorableValue, match=why) as refused:
        dumps(value)
    assert isinstance(refused.value, InboundError)  # bad input: quarantined, never retried
