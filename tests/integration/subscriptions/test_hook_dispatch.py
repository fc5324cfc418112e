"""The dispatcher in front of Flask (refloop/app.py) on a real port: regular hook URLs are
answered by the HTTP edge (refloop/edge, subscriptions/hook_edge.py) without Flask, everything
else by Flask; both carry the security headers and exactly one request log line."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import requests

from refloop.services import Services
from subscriptions.registry import Hook

FHIR = {"Content-Type": "application/fhir+json; charset=utf-8"}
RESOURCE = {"resourceType": "ServiceRequest", "id": "sr-1", "meta": {"versionId": "3"},
            "status": "active", "intent": "order", "subject": {"reference": "Patient/1"}}


def hook_for(services: Services) -> Hook:
    subs = services.adapters["subscriptions"]
    return subs.registry.open_hook(server="http://ehr.invalid/fhir", purpose="referrals",
                                   deliver_kind="subscriptions.referral")


def bearer(hook: Hook) -> dict[str, str]:
    return {**FHIR, "Authorization": f"Bearer {hook.secret}"}


@pytest.fixture
def flask_paths(listener: Any) -> list[str]:
    """Paths of the requests that reached Flask's request handling."""
    from flask import request

    seen: list[str] = []
    listener.app.before_request_funcs.setdefault(None, []).insert(
        0, lambda: seen.append(request.path))
    return seen


def http_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "refloop.http"]


def test_hooks_are_answered_without_flask_with_headers_and_one_log_line(
        listener: Any, flask_paths: list[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="refloop")
    services = listener.services
    hook = hook_for(services)
    r = requests.put(f"{hook.url}/ServiceRequest/sr-1", json=RESOURCE, headers=bearer(hook),
                     timeout=5)
    assert r.status_code == 200, r.text
    assert r.json()["issue"][0]["diagnostics"] == "notification stored"
    assert r.headers["Content-Type"] == "application/fhir+json"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert services.inbox.counts().get("received") == 1  # stored before the 200
    root = requests.post(hook.url, data=b"", headers=bearer(hook), timeout=5)
    assert root.status_code == 200
    assert flask_paths == []
    lines = http_records(caplog)
    assert [(x.method, x.path, x.status) for x in lines] == [  # type: ignore[attr-defined]
        ("PUT", "/hooks/<hook_id>/<path:subpath>", 200), ("POST", "/hooks/<hook_id>", 200)]
    assert all(isinstance(x.ms, float) and x.ms >= 0 for x in lines)  # type: ignore[attr-defined]
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records
                      if r.name.startswith("refloop"))  # not the test server's access log
    assert hook.secret not in logged and hook.id not in logged


def test_refusals_on_the_lean_path_keep_headers_and_are_logged(
        listener: Any, flask_paths: list[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="refloop")
    services = listener.services
    hook = hook_for(services)
    r = requests.put(f"{hook.url}/ServiceRequest/sr-1", json=RESOURCE,
                     headers={**FHIR, "Authorization": "Bearer wrong"}, timeout=5)
    assert r.status_code == 401 and r.json()["issue"][0]["code"] == "login"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert sum(services.inbox.counts().values()) == 0
    bad = requests.put(f"{hook.url}/ServiceRequest/sr-1", data=b"{not json",
                       headers=bearer(hook), timeout=5)
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"
    assert bad.headers["X-Content-Type-Options"] == "nosniff"
    assert len(services.quarantine.list()) == 1
    assert flask_paths == []
    assert [x.status for x in http_records(caplog)] == [401, 400]  # type: ignore[attr-defined]


def test_other_paths_and_methods_reach_flask_and_are_logged_once(
        listener: Any, flask_paths: list[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="refloop")
    hook = hook_for(listener.services)
    health = requests.get(f"http://127.0.0.1:{listener.port}/healthz", timeout=5)
    assert health.status_code == 200 and health.headers["X-Content-Type-Options"] == "nosniff"
    wrong_method = requests.get(hook.url, headers=bearer(hook), timeout=5)
    assert wrong_method.status_code == 405
    assert set(wrong_method.headers["Allow"].split(", ")) >= {"POST", "PUT", "DELETE"}
    assert wrong_method.headers["X-Content-Type-Options"] == "nosniff"
    no_id = requests.post(f"http://127.0.0.1:{listener.port}/hooks/", timeout=5)
    assert no_id.status_code == 404
    path = hook.url.removeprefix(f"http://127.0.0.1:{listener.port}")
    assert flask_paths == ["/healthz", path, "/hooks/"]
    assert [(x.path, x.status) for x in http_records(caplog)] == [  # type: ignore[attr-defined]
        ("(unmatched)", 405), ("(unmatched)", 404)]
