"""The FHIR facade through Flask's test client on a real store: CapabilityStatement, Task read,
Task search with every parameter, paging links, and OperationOutcome for bad input. Every request
carries a bearer token from the real token endpoint (the `fhir_auth` fixture)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from flask.testing import FlaskClient

from referrals.model import Command, Reason, Referral, new_referral_id
from refloop.app import create_app
from refloop.services import Services

BASE = datetime(2026, 1, 1, 10, 0, 0, 500000, tzinfo=UTC)
COUNT = 12
SEARCH_PARAMS = {"_id", "status", "business-status", "patient", "owner", "focus", "_lastUpdated"}


def load(services: Services) -> list[str]:
    """Referral i: last updated BASE + i days + 1 hour; stage by i % 4; patient p(i % 3);
    owner o(i % 2); focus sr(i)."""
    ids = []
    for i in range(COUNT):
        opened = BASE + timedelta(days=i)
        draft = Referral(id=new_referral_id(), source_key=f"t|{i}",
                         service_request=f"ServiceRequest/sr{i}", patient=f"Patient/p{i % 3}",
                         owner=f"PractitionerRole/o{i % 2}")
        referral, _ = services.referrals.open(draft, Command("detect", at=opened))
        last = opened + timedelta(hours=1)
        kind = i % 4
        if kind == 0:
            services.referrals.act(referral.id, Command("accept", at=last))
        elif kind == 1:
            services.referrals.act(referral.id, Command("triage", at=last))
        elif kind == 2:
            services.referrals.act(referral.id, Command("decline", at=last,
                                                        reason=Reason("not-covered")))
        else:
            services.referrals.act(referral.id, Command("accept", at=opened))
            services.referrals.act(referral.id, Command("hold", at=last,
                                                        reason=Reason("patient-travel")))
        ids.append(referral.id)
    return ids


@pytest.fixture
def loaded(services: Services, fhir_auth: Any) -> Iterator[tuple[FlaskClient, list[str]]]:
    ids = load(services)
    client = create_app(services).test_client()
    client.environ_base.update(fhir_auth.environ(client, services))
    yield client, ids


def search(client: FlaskClient, query: str) -> dict[str, Any]:
    response = client.get(f"/fhir/Task?{query}")
    assert response.status_code == 200, response.get_json()
    assert response.mimetype == "application/fhir+json"
    body = response.get_json()
    Bundle.model_validate(body)
    assert body["type"] == "searchset"
    return body


def indexes(body: dict[str, Any], ids: list[str]) -> list[int]:
    return sorted(ids.index(e["resource"]["id"]) for e in body.get("entry", []))


def test_metadata_lists_exactly_the_task_routes(loaded: tuple[FlaskClient, list[str]]) -> None:
    client, _ids = loaded
    response = client.get("/fhir/metadata")
    assert response.status_code == 200
    statement = response.get_json()
    CapabilityStatement.model_validate(statement)
    assert statement["fhirVersion"] == "4.0.1" and statement["kind"] == "instance"
    [rest] = statement["rest"]
    task = next(r for r in rest["resource"] if r["type"] == "Task")
    assert {i["code"] for i in task["interaction"]} == {"read", "search-type"}
    assert {p["name"] for p in task["searchParam"]} == SEARCH_PARAMS
    assert statement["implementation"]["url"].endswith("/fhir")
    # every interaction listed answers; every search parameter listed is accepted
    assert client.get("/fhir/Task").status_code == 200
    assert client.get("/fhir/Task/unknown").get_json()["issue"][0]["code"] == "not-found"
    samples = {"_id": "x", "status": "accepted", "business-status": "3.0", "patient": "p1",
               "owner": "PractitionerRole/o1", "focus": "sr1", "_lastUpdated": "ge2026"}
    for param in task["searchParam"]:
        assert client.get(f"/fhir/Task?{param['name']}={samples[param['name']]}"
                          ).status_code == 200, param


def test_read_task(loaded: tuple[FlaskClient, list[str]], services: Services) -> None:
    client, ids = loaded
    response = client.get(f"/fhir/Task/{ids[3]}")
    assert response.status_code == 200
    assert response.get_json() == services.store.task(ids[3])
    assert response.headers["ETag"] == 'W/"3"'
    assert response.get_json()["status"] == "on-hold"


def test_unknown_ids_and_paths_are_404_operation_outcomes(
        loaded: tuple[FlaskClient, list[str]]) -> None:
    client, _ids = loaded
    for path in ["/fhir/Task/does-not-exist", "/fhir/Patient/1", "/fhir/Task/x/_history/1"]:
        response = client.get(path)
        assert (path, response.status_code) == (path, 404)
        assert response.mimetype == "application/fhir+json"
        OperationOutcome.model_validate(response.get_json())


SEARCHES: list[tuple[str, list[int]]] = [
    ("status=accepted", [0, 4, 8]),
    ("status=received,rejected", [1, 2, 5, 6, 9, 10]),
    ("status=http://hl7.org/fhir/task-status|on-hold", [3, 7, 11]),
    ("business-status=3.0", [0, 3, 4, 7, 8, 11]),
    ("business-status=on-hold", [3, 7, 11]),
    ("business-status=http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS|4.0",
     [2, 6, 10]),
    ("business-status=2.0,declined", [1, 2, 5, 6, 9, 10]),
    ("patient=Patient/p1", [1, 4, 7, 10]),
    ("patient=p1", [1, 4, 7, 10]),
    ("owner=PractitionerRole/o0", [0, 2, 4, 6, 8, 10]),
    ("focus=ServiceRequest/sr5", [5]),
    ("focus=sr5", [5]),
    ("status=accepted&patient=p1", [4]),
    ("_lastUpdated=2026-01-03", [2]),
    ("_lastUpdated=ge2026-01-10", [9, 10, 11]),
    ("_lastUpdated=gt2026-01-10", [10, 11]),
    ("_lastUpdated=lt2026-01-03", [0, 1]),
    ("_lastUpdated=le2026-01-03", [0, 1, 2]),
    ("_lastUpdated=2026-01", list(range(COUNT))),
    ("_lastUpdated=2026", list(range(COUNT))),
    ("_lastUpdated=2025", []),
    ("_lastUpdated=2026-01-05T11:00:00.500Z", [4]),
    ("_lastUpdated=2026-01-05T11:00:00.501Z", []),
    ("_lastUpdated=2026-01-05T11:00:00Z", [4]),
    ("_lastUpdated=2026-01-05T11:00Z", [4]),
    ("_lastUpdated=2026-01-05T06:00:00.500-05:00", [4]),
    ("_lastUpdated=gt2026-01-05T11:00:00.500Z", [5, 6, 7, 8, 9, 10, 11]),
    ("_lastUpdated=ge2026-01-05T11:00:00.500Z&_lastUpdated=lt2026-01-07", [4, 5]),
    ("_lastUpdated=ge2026-01-03&_lastUpdated=lt2026-01-06", [2, 3, 4]),
]


def test_search(loaded: tuple[FlaskClient, list[str]]) -> None:
    client, ids = loaded
    for query, expected in SEARCHES:
        body = search(client, query.replace("+", "%2B"))
        assert (query, indexes(body, ids)) == (query, expected)
        assert body["total"] == len(expected), query


def test_search_by_id(loaded: tuple[FlaskClient, list[str]]) -> None:
    client, ids = loaded
    assert indexes(search(client, f"_id={ids[2]},{ids[7]}"), ids) == [2, 7]


def _link(body: dict[str, Any], relation: str) -> str | None:
    for link in body["link"]:
        if link["relation"] == relation:
            parts = urlsplit(link["url"])
            return f"{parts.path}?{parts.query}"
    return None


def test_paging_links_reach_every_result_once(loaded: tuple[FlaskClient, list[str]]) -> None:
    client, ids = loaded
    first = search(client, "_count=5&_sort=_lastUpdated")
    assert first["total"] == COUNT and len(first["entry"]) == 5
    assert _link(first, "previous") is None and _link(first, "first") is not None
    seen: list[str] = []
    body: dict[str, Any] | None = first
    pages = 0
    while body is not None:
        pages += 1
        seen += [e["resource"]["id"] for e in body["entry"]]
        following = _link(body, "next")
        body = client.get(following).get_json() if following else None
    assert pages == 3 and seen == ids  # oldest first, each exactly once
    last = client.get(_link(first, "last")).get_json()
    assert [e["resource"]["id"] for e in last["entry"]] == ids[10:]
    assert _link(last, "next") is None
    back: list[str] = []
    body = last
    while body is not None:
        back = [e["resource"]["id"] for e in body["entry"]] + back
        previous = _link(body, "previous")
        body = client.get(previous).get_json() if previous else None
    assert back == ids
    newest = search(client, "_count=5")
    assert [e["resource"]["id"] for e in newest["entry"]] == ids[::-1][:5]
    assert "status=" in (_link(search(client, "status=accepted&_count=1"), "next") or "")


def test_count_zero_gives_the_total_only(loaded: tuple[FlaskClient, list[str]]) -> None:
    client, _ids = loaded
    body = search(client, "_count=0")
    assert (body["total"] == COUNT and "entry" not in body) or body["entry"] == []


BAD_QUERIES = [
    "colour=red", "_count=abc", "_count=-1", "_offset=x", "_lastUpdated=yesterday",
    "_lastUpdated=ne2026-01-01", "_lastUpdated=ap2026-01-01", "_lastUpdated=2026-13",
    "status=bogus", "business-status=9.9", "status:not=accepted", "_sort=status", "patient=",
    "_lastUpdated=ge2026-01-01,le2026-02-01", "_count=1&_count=2",
    "_sort=_lastUpdated&_sort=-_lastUpdated",
]


def test_format_other_than_json_is_406(loaded: tuple[FlaskClient, list[str]]) -> None:
    client, _ids = loaded
    for wanted in ("xml", "application/fhir%2Bxml", "text/html"):
        response = client.get(f"/fhir/Task?_format={wanted}")
        assert (wanted, response.status_code) == (wanted, 406)
        assert response.get_json()["issue"][0]["code"] == "not-supported"
    for wanted in ("json", "application/fhir%2Bjson", "application/fhir+json", "application/json"):
        assert client.get(f"/fhir/Task?_format={wanted}").status_code == 200


def test_bad_search_input_is_a_400_operation_outcome(
        loaded: tuple[FlaskClient, list[str]]) -> None:
    client, _ids = loaded
    for query in BAD_QUERIES:
        response = client.get(f"/fhir/Task?{query}")
        assert (query, response.status_code) == (query, 400)
        assert response.mimetype == "application/fhir+json"
        outcome = response.get_json()
        OperationOutcome.model_validate(outcome)
        assert outcome["issue"][0]["severity"] == "error"
        assert outcome["issue"][0]["diagnostics"], query
