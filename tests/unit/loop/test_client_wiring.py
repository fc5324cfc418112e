"""The adapter's client: the shared one under its log name, with conditional creates and updates
that return what the server stored."""

from __future__ import annotations

import logging

import pytest
from scripted_peer import install

from loop.client import FhirClient
from referrals.errors import PeerError

TASK = {"resourceType": "Task", "status": "requested"}


def test_a_conditional_create_returns_the_id_from_the_location(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    peer = install(monkeypatch, (201, b"", {"Location": "http://s.test/fhir/Task/t9/_history/1"}))
    with caplog.at_level(logging.INFO, logger="refloop.loop.client"):
        stored = FhirClient("http://s.test/fhir").create_once(TASK, "urn:x|1")
    assert stored == {"resourceType": "Task", "id": "t9"}
    assert peer.sent[0].headers["If-None-Exist"] == "identifier=urn:x|1"
    assert [r.name for r in caplog.records] == ["refloop.loop.client"]


def test_a_conditional_update_names_the_identifier_and_needs_an_answer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    peer = install(monkeypatch, (200, {**TASK, "id": "t1"}), (200, b""))
    client = FhirClient("http://s.test/fhir")
    assert client.update_where(TASK, "urn:x|1")["id"] == "t1"
    assert peer.sent[0].url == "http://s.test/fhir/Task?identifier=urn%3Ax%7C1"
    with pytest.raises(PeerError, match="without the resource or a Location"):
        client.update_where(TASK, "urn:x|1")


def test_reads_tell_gone_from_not_a_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, 410, (200, {"id": "no type"}))
    client = FhirClient("http://s.test/fhir")
    assert client.try_read("DocumentReference/d1") is None
    with pytest.raises(PeerError, match="the answer is not a FHIR resource"):
        client.read("DocumentReference/d1")
