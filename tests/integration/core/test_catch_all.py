"""The catch-all: an exception nobody handled (in a Flask view, in the hook endpoint, in the
edge's route call) is a 500 OperationOutcome with a correlation id, logged once with its
traceback under that id, and the input is kept in quarantine; the server keeps serving."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from refloop.app import create_edge_app
from refloop.edge.server import RunningEdge, serve_in_thread
from refloop.services import Services, build_services
from refloop.settings import Settings

SR = {"resourceType": "ServiceRequest", "id": "sr-1", "status": "active", "intent": "order"}


@pytest.fixture
def served(sqlite_url: str, tmp_path: Path) -> Iterator[tuple[Services, RunningEdge, Any]]:
    services = build_services(Settings(var_dir=tmp_path / "var", database_url=sqlite_url))
    app = create_edge_app(services)

    def boom() -> Any:
        raise ZeroDivisionError("a bug in a view")

    app.wsgi.add_url_rule("/boom", "boom", boom, methods=["GET", "POST"])  # type: ignore
    running = serve_in_thread(app)
    yield services, running, app
    running.stop()
    services.close()


def correlation_of(response: requests.Response) -> str:
    outcome = response.json()
    assert response.status_code == 500 and outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "exception"
    found = re.search(r"correlation id ([0-9a-f]{16})", outcome["issue"][0]["diagnostics"])
    assert found is not None
    return found.group(1)


def logged_once(caplog: pytest.LogCaptureFixture, correlation: str) -> None:
    records = [r for r in caplog.records if getattr(r, "correlation_id", None) == correlation]
    assert len(records) == 1 and records[0].exc_info is not None


def test_a_failing_view(served: Any, caplog: pytest.LogCaptureFixture) -> None:
    services, running, _ = served
    caplog.set_level(logging.INFO)
    base = f"http://127.0.0.1:{running.port}"
    r = requests.post(f"{base}/boom?access_token=abc&x=1", data=b"the body", timeout=5)
    correlation = correlation_of(r)
    logged_once(caplog, correlation)
    kept = services.quarantine.list()
    assert len(kept) == 1 and kept[0].kind == "http.request"
    assert correlation in kept[0].reason
    assert bytes(kept[0].original).endswith(b"\nthe body")
    assert b"abc" not in bytes(kept[0].original)  # secret query parameters are masked
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 200


def test_a_failing_hook_endpoint(served: Any, caplog: pytest.LogCaptureFixture,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    services, running, _ = served
    caplog.set_level(logging.INFO)
    hook = services.adapters["subscriptions"].registry.open_hook(
        server="http://ehr.invalid/fhir", purpose="referrals",
        deliver_kind="subscriptions.referral")
    url = f"http://127.0.0.1:{running.port}/hooks/{hook.id}/ServiceRequest/sr-1"
    headers = {"Authorization": f"Bearer {hook.secret}", "Content-Type": "application/fhir+json"}

    def broken(*_: Any) -> Any:
        raise KeyError("a bug in the parser")

    monkeypatch.setattr("subscriptions.endpoint.parse_notification", broken)
    body = json.dumps(SR).encode()
    correlation = correlation_of(requests.put(url, data=body, headers=headers, timeout=5))
    logged_once(caplog, correlation)
    kept = services.quarantine.list()
    assert [bytes(k.original) for k in kept] == [body] and correlation in kept[0].reason
    assert services.inbox.counts() == {"rejected": 1} and services.work.counts() == {}
    monkeypatch.undo()
    assert requests.put(url, data=body, headers=headers, timeout=5).status_code == 200


def test_a_failing_route_at_the_edge(served: Any, caplog: pytest.LogCaptureFixture,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    services, running, _ = served
    caplog.set_level(logging.INFO)

    def down(*_: Any) -> Any:
        raise RuntimeError("the hook registry is unreachable")

    monkeypatch.setattr(services.adapters["subscriptions"].endpoint, "admit", down)
    url = f"http://127.0.0.1:{running.port}/hooks/abc/ServiceRequest/1"
    correlation = correlation_of(requests.put(url, json=SR, timeout=5))
    logged_once(caplog, correlation)
    kept = services.quarantine.list()
    assert len(kept) == 1 and kept[0].kind == "http.request" and correlation in kept[0].reason
    assert bytes(kept[0].original).startswith(b"PUT /hooks/abc/ServiceRequest/1\n")
    assert requests.get(f"http://127.0.0.1:{running.port}/healthz", timeout=5).status_code == 200


def test_client_errors_under_fhir_paths_are_operation_outcomes(served: Any) -> None:
    """FHIR clients (and FHIR servers posting notifications) read OperationOutcomes: a 404 or
    405 that Flask decides under /fhir or /hooks is one (with Allow), not an HTML page; other
    paths keep Flask's answers."""
    _services, running, _app = served
    base = f"http://127.0.0.1:{running.port}"
    for method, path, status, code in (("GET", "/hooks/some-hook", 405, "not-supported"),
                                       ("GET", "/fhir", 404, "not-found"),
                                       ("POST", "/fhir/", 404, "not-found")):
        answer = requests.request(method, base + path, timeout=10)
        assert answer.status_code == status, (path, answer.text)
        assert answer.headers["Content-Type"].startswith("application/fhir+json")
        assert answer.json()["issue"][0]["code"] == code
    assert "POST" in requests.get(base + "/hooks/some-hook", timeout=10).headers["Allow"]
    elsewhere = requests.get(base + "/no-such-page", timeout=10)
    assert elsewhere.status_code == 404 and "text/html" in elsewhere.headers["Content-Type"]
