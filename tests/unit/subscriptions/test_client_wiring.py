"""The adapter's client is the shared one under its own log name and backoff; its token form."""

from __future__ import annotations

import logging

import pytest
from scripted_peer import install

from subscriptions.client import FhirClient, send_form


def test_the_client_logs_as_the_adapter(monkeypatch: pytest.MonkeyPatch,
                                        caplog: pytest.LogCaptureFixture) -> None:
    install(monkeypatch, (200, {"resourceType": "CapabilityStatement"}))
    with caplog.at_level(logging.INFO, logger="refloop.subscriptions.client"):
        reply = FhirClient("http://ehr.test/fhir").get("metadata")
    assert reply.body == {"resourceType": "CapabilityStatement"}
    assert [r.name for r in caplog.records] == ["refloop.subscriptions.client"]
    assert FhirClient("http://ehr.test").backoff == 0.3


def test_the_token_form_is_posted_asking_for_json(monkeypatch: pytest.MonkeyPatch) -> None:
    peer = install(monkeypatch, (200, {"access_token": "t"}))
    reply = send_form("http://auth.test/token", {"grant_type": "client_credentials"})
    assert reply.body == {"access_token": "t"}
    (sent,) = peer.sent
    assert (sent.method, sent.headers["Accept"], sent.body) == (
        "POST", "application/json", "grant_type=client_credentials")
