"""JSON columns are written with orjson (referrals/store/database.py `dumps`)."""

from __future__ import annotations

import json

import pytest

from referrals.store.database import dumps


def test_a_resource_is_written_as_the_json_module_reads_it() -> None:
    body = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Ó Súilleabháin"}],
            "active": True, "multipleBirthInteger": 2}
    assert json.loads(dumps(body)) == body


def test_keys_that_are_not_strings_are_written_as_strings() -> None:
    assert json.loads(dumps({1: "one", "nested": {2: [3]}})) == {"1": "one", "nested": {"2": [3]}}


def test_a_value_json_cannot_hold_is_refused() -> None:
    with pytest.raises(TypeError):
        dumps({"tags": {"a", "b"}})
