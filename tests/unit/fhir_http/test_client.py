"""The shared FHIR client: bounded retries (a write only when nothing was applied), one token
refresh on 401, PeerError texts, headers, and log lines without query strings or tokens."""

from __future__ import annotations

import logging

import pytest
import requests
from scripted_peer import install

from fhir_http.client import FhirClient, may_retry, send_plain
from referrals.errors import PeerError

BASE = "http://ehr.test/fhir"
OUTCOME = {"resourceType": "OperationOutcome",
           "issue": [{"severity": "error", "code": "processing", "diagnostics": "bad id"}]}


def client(**kwargs: object) -> FhirClient:
    return FhirClient(BASE, backoff=0.0, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_a_read_is_asked_again_after_a_passing_failure(monkeypatch: pytest.MonkeyPatch,
                                                       status: int) -> None:
    peer = install(monkeypatch, status, (200, {"resourceType": "Patient", "id": "p1"}))
    reply = client().send("GET", "Patient/p1", ok=(200,))
    assert reply.body == {"resourceType": "Patient", "id": "p1"} and len(peer.sent) == 2


def test_retries_are_bounded_and_the_last_answer_is_a_retryable_peer_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    peer = install(monkeypatch, 503, 503, 503, 200)
    with pytest.raises(PeerError) as caught:
        client().send("GET", "Patient", params=[("name", "Smith")])
    assert len(peer.sent) == 3 and caught.value.retryable
    assert str(caught.value) == f"GET {BASE}/Patient answered 503: (no OperationOutcome)"


def test_a_write_is_sent_again_only_when_the_server_applied_nothing() -> None:
    assert may_retry("POST", 429) and may_retry("PUT", 503)
    assert not may_retry("POST", 502) and not may_retry("PUT", 504)
    assert may_retry("GET", 502) and not may_retry("GET", 500)


def test_a_write_answered_502_is_not_sent_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    peer = install(monkeypatch, 502, 201)
    with pytest.raises(PeerError, match="answered 502"):
        client().send("POST", "Subscription", body={"resourceType": "Subscription"})
    assert len(peer.sent) == 1


def test_the_peer_error_says_what_the_outcome_says(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, (400, OUTCOME), (408, None), (401, {"error": "invalid_token",
                                                          "error_description": "expired"}))
    with pytest.raises(PeerError) as bad:
        client().send("GET", "Patient/x")
    with pytest.raises(PeerError) as later:
        client().send("GET", "Patient/x")
    with pytest.raises(PeerError) as refused:
        client().send("GET", "Patient/x")
    assert str(bad.value).endswith("answered 400: bad id") and not bad.value.retryable
    assert later.value.retryable  # 408: come back later
    assert str(refused.value).endswith("answered 401: invalid_token: expired")


def test_no_answer_is_retried_then_said_with_what_to_check(
        monkeypatch: pytest.MonkeyPatch) -> None:
    peer = install(monkeypatch, *[requests.ConnectionError("refused")] * 3)
    with pytest.raises(PeerError) as caught:
        client(retries=3).send("DELETE", "Subscription/s1?x=1")
    assert len(peer.sent) == 3 and isinstance(caught.value.__cause__, requests.ConnectionError)
    assert str(caught.value) == (f"DELETE {BASE}/Subscription/s1 failed: ConnectionError; "
                                 "check that the server is reachable")


def test_a_401_asks_for_a_fresh_token_once(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[bool] = []

    def authorize(fresh: bool) -> str:
        asked.append(fresh)
        return f"Bearer token-{len(asked)}"

    peer = install(monkeypatch, 401, 200, 401, 401)
    assert client(authorize=authorize).send("GET", "metadata").status == 200
    assert asked == [False, True, False] and peer.sent[1].headers["Authorization"] == \
        "Bearer token-3"
    with pytest.raises(PeerError, match="answered 401"):
        client(authorize=authorize).send("GET", "metadata")


def test_headers_say_fhir_json_and_carry_the_callers(monkeypatch: pytest.MonkeyPatch) -> None:
    peer = install(monkeypatch, 200, 201)
    fhir = client(timeout=4.0)
    fhir.send("GET", "/Patient", params=[("_id", "a,b")])
    fhir.send("POST", f"{BASE}/Task", body={"resourceType": "Task"},
              headers={"If-None-Exist": "identifier=x"})
    read, write = peer.sent
    assert read.url == f"{BASE}/Patient?_id=a%2Cb" and read.timeout == 4.0
    assert read.headers["Accept"] == "application/fhir+json" and "Content-Type" not in \
        read.headers and "Authorization" not in read.headers
    assert write.headers["Content-Type"] == "application/fhir+json"
    assert write.headers["If-None-Exist"] == "identifier=x" and write.body == \
        b'{"resourceType": "Task"}'


def test_log_lines_hold_no_query_and_no_token(monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    install(monkeypatch, requests.Timeout("slow"), 200)
    with caplog.at_level(logging.INFO, logger="refloop.fhir_http"):
        client(authorize=lambda fresh: "Bearer s3cret").send(
            "GET", "Patient", params=[("birthdate", "1970-01-01")])
    failed, done = caplog.records
    assert (failed.getMessage(), failed.attempt, failed.error) == ("fhir call failed", 1,  # type: ignore[attr-defined]
                                                                    "Timeout")
    assert (done.getMessage(), done.status, done.attempt) == ("fhir call", 200, 2)  # type: ignore[attr-defined]
    assert {failed.url, done.url} == {f"{BASE}/Patient"}  # type: ignore[attr-defined]
    assert "1970" not in caplog.text and "s3cret" not in str([r.__dict__ for r in caplog.records])


def test_bodies_postgresql_cannot_store_are_cleaned_and_other_text_is_kept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, (200, b'{"name": "A\\u0000B\\ud800"}'),
            (502, b"<html>bad gateway</html>"), (200, b"", {"ETag": 'W/"3"'}))
    fhir = client(retries=1)
    assert fhir.send("GET", "Patient/1").body == {"name": "AB\ufffd"}
    gateway = fhir.send("GET", "Patient/1", ok=(502,))
    assert gateway.body is None and gateway.text == "<html>bad gateway</html>"
    assert fhir.send("GET", "Patient/1").version == "3"


def test_a_plain_request_retries_5xx_and_returns_any_other_status(
        monkeypatch: pytest.MonkeyPatch) -> None:
    peer = install(monkeypatch, 500, (400, {"error": "invalid_client"}))
    reply = send_plain("POST", "http://auth.test/token", data={"grant_type": "x"}, backoff=0.0)
    assert reply.status == 400 and reply.body == {"error": "invalid_client"}
    assert len(peer.sent) == 2 and peer.sent[0].body == "grant_type=x"


def test_a_plain_request_without_an_answer_is_a_peer_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, requests.ConnectionError(), requests.ConnectionError())
    with pytest.raises(PeerError, match=r"^GET http://links.test/m failed: ConnectionError$"):
        send_plain("GET", "http://links.test/m?_since=x", retries=2, backoff=0.0)


def test_a_plain_file_is_kept_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, (200, b'{"a": 1}\n{"b": 2}\n'))
    reply = send_plain("GET", "http://links.test/slots.ndjson", decode=False)
    assert reply.body is None and reply.text == '{"a": 1}\n{"b": 2}\n'
