"""RFC 9112's rules on a request's head (refloop/edge/head_rules.py), as pure decisions; the
edge answering them once and closing is tested over a socket in
tests/integration/core/test_bad_input.py (rows `head-...`)."""

from __future__ import annotations

import json

import pytest

from refloop.edge.head_rules import refusal

HOST = [("host", "refloop.example.org:8080")]


@pytest.mark.parametrize(("method", "version", "headers", "upgrade", "status", "phrase"), [
    ("CONNECT", "1.1", HOST, True, 405, "CONNECT"),
    ("GET", "1.1", HOST, True, 400, "upgrades"),
    ("GET", "1.1", [], False, 400, "needs a Host"),
    ("GET", "1.1", [("host", "a"), ("host", "a")], False, 400, "more than one"),
    ("GET", "1.0", [("host", "a"), ("host", "b")], False, 400, "more than one"),
    ("GET", "1.1", [("host", "a b")], False, 400, "not a valid"),
    ("GET", "1.1", [("host", "a/b")], False, 400, "not a valid"),
])
def test_refused(method: str, version: str, headers: list[tuple[str, str]], upgrade: bool,
                 status: int, phrase: str) -> None:
    answer = refusal(method, version, headers, upgrade)
    assert answer is not None and answer.status == status
    assert phrase in json.loads(answer.body)["issue"][0]["diagnostics"]
    assert ("Allow" in dict(answer.headers)) == (status == 405)


@pytest.mark.parametrize(("version", "headers"), [
    ("1.1", HOST), ("1.1", [("host", "[::1]:80")]), ("1.1", [("host", "127.0.0.1")]),
    ("1.1", [("host", "")]), ("1.0", []), ("1.1", [("host", "xn--bcher-kva.example")]),
])
def test_accepted(version: str, headers: list[tuple[str, str]]) -> None:
    assert refusal("GET", version, headers, False) is None
