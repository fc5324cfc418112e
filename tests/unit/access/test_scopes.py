"""SMART scopes: v1 and v2 syntax, what registered scopes allow, and what a grant reaches."""

from __future__ import annotations

import pytest

from access.grant import Grant
from access.scopes import (
    ResourceScope,
    ScopeError,
    allowed,
    check_scope,
    granting_contexts,
    parse_resource_scope,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("system/Task.rs", ResourceScope("system", "Task", "rs")),
    ("user/Task.read", ResourceScope("user", "Task", "rs")),
    ("patient/*.write", ResourceScope("patient", "*", "cud")),
    ("system/*.*", ResourceScope("system", "*", "cruds")),
    ("system/Task.cruds", ResourceScope("system", "Task", "cruds")),
    ("openid", None), ("launch/patient", None), ("metrics:read", None),
    ("patient/Observation.rs?category=laboratory", None),  # granular: grants nothing here
    ("system/task.rs", None),  # not a resource type: a plain name
])
def test_parse(text: str, expected: ResourceScope | None) -> None:
    assert parse_resource_scope(text) == expected


@pytest.mark.parametrize("text", ["system/Task.sr", "system/Task.rr", "system/Task.x",
                                  "user/Task.dus"])
def test_bad_permissions(text: str) -> None:
    with pytest.raises(ScopeError, match="in that order"):
        parse_resource_scope(text)


@pytest.mark.parametrize("text", ["", "has space", "a?b=c", "?", "system/Task.sr"])
def test_check_scope_refuses(text: str) -> None:
    with pytest.raises(ScopeError):
        check_scope(text)


def test_allowed_by_registration() -> None:
    registered = ["system/Task.rs", "system/Patient.r", "metrics:read"]
    assert allowed(["system/Task.rs", "system/Task.r", "system/Task.read",
                    "system/Patient.rs", "system/Task.c", "metrics:read", "metrics:write",
                    "user/Task.rs", "system/Task.rs?status=accepted"], registered) == [
        "system/Task.rs", "system/Task.r", "system/Task.read", "metrics:read"]
    assert allowed(["system/Observation.rs", "system/Task.s"], ["system/*.rs"]) == [
        "system/Observation.rs", "system/Task.s"]
    assert allowed([], registered) == []


def test_granting_contexts() -> None:
    scopes = ["user/Task.s", "patient/Task.r", "system/Patient.rs", "bogus/Task.rs",
              "system/Task.sr"]
    assert granting_contexts(scopes, "Task", "search-type") == {"user"}
    assert granting_contexts(scopes, "Task", "read") == {"patient"}
    assert granting_contexts(scopes, "Patient", "read") == {"system"}
    assert granting_contexts(["system/*.rs"], "Anything", "read") == {"system"}
    assert granting_contexts(["system/Task.cud"], "Task", "read") == set()


def test_grant_reach() -> None:
    system = Grant("c", ("system/Task.rs",))
    reach = system.reach("Task", "read")
    assert reach is not None and (reach.context, reach.sources, reach.patient) == \
        ("system", None, None)
    tenant_client = Grant("c", ("system/Task.rs",), tenant="north", sources=("n",))
    assert tenant_client.reach("Task", "search-type").sources == ("n",)  # type: ignore[union-attr]
    user = Grant("c", ("user/Task.rs",), issuer="x", tenant="t", sources=("t",))
    assert user.reach("Task", "read").context == "user"  # type: ignore[union-attr]
    assert Grant("c", ("user/Task.rs",)).reach("Task", "read") is None  # no tenant
    patient = Grant("c", ("patient/Task.rs",), sources=("t",), patient="Patient/1")
    found = patient.reach("Task", "read")
    assert found is not None and (found.context, found.patient) == ("patient", "Patient/1")
    assert Grant("c", ("patient/Task.rs",)).reach("Task", "read") is None  # no patient
    broad = Grant("c", ("patient/Task.rs", "user/Task.rs"), sources=("t",), patient="Patient/1")
    assert broad.reach("Task", "read").context == "user"  # type: ignore[union-attr]
    assert Grant("c", ("system/Patient.rs",)).reach("Task", "read") is None
