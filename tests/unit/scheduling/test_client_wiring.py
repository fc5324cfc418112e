"""The adapter's client: the shared one under its log name, with searches that follow `next`
links, and plain GETs of SMART Scheduling Links files."""

from __future__ import annotations

import logging

import pytest
from scripted_peer import install

from referrals.errors import PeerError
from scheduling.client import FhirClient, fetch


def bundle(*links: str) -> dict[str, object]:
    return {"resourceType": "Bundle", "link": [{"relation": "next", "url": u} for u in links]}


def test_pages_follow_next_links(monkeypatch: pytest.MonkeyPatch,
                                 caplog: pytest.LogCaptureFixture) -> None:
    peer = install(monkeypatch, (200, bundle("http://c.test/fhir?page=2")), (200, bundle()))
    with caplog.at_level(logging.INFO, logger="refloop.scheduling.client"):
        pages = list(FhirClient("http://c.test/fhir").pages("Slot", [("status", "free")]))
    assert len(pages) == 2 and peer.sent[1].url == "http://c.test/fhir?page=2"
    assert {r.name for r in caplog.records} == {"refloop.scheduling.client"}


def test_a_search_must_answer_a_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, (200, {"resourceType": "Slot"}))
    with pytest.raises(PeerError, match="the answer is not a Bundle"):
        FhirClient("http://c.test/fhir").search("Slot", [])


def test_fetch_takes_304_and_refuses_other_statuses(monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    install(monkeypatch, 304, 404)
    with caplog.at_level(logging.INFO, logger="refloop.scheduling.client"):
        assert fetch("http://links.test/$bulk-publish?_since=2026").status == 304
    assert [(r.getMessage(), r.url) for r in caplog.records] == [  # type: ignore[attr-defined]
        ("http get", "http://links.test/$bulk-publish")]
    with pytest.raises(PeerError) as caught:
        fetch("http://links.test/slots.ndjson")
    assert str(caught.value) == "GET http://links.test/slots.ndjson answered 404"
    assert not caught.value.retryable
