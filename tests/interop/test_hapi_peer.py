"""Smoke test of the HAPI FHIR peer (interop/hapi: HAPI FHIR JPA server 8.8.0, R4, H2 in memory).

Wire behaviour observed with this peer (HAPI 8.8.0, classic R4 criteria Subscription, rest-hook),
measured on the 2-core machine, listener = Python http.server on 127.0.0.1 answering 200 with an
empty body:

* ``POST /Subscription`` with ``status: requested`` answers 201
  (``Location: .../Subscription/{id}/_history/1``), still ``requested``. HAPI activates it
  itself, without contacting the endpoint (no handshake): ``status: active`` as version 2 after
  about 0.8-1.5 s (up to 2.5 s for the first one after start-up). HAPI adds ``meta.tag``
  ``http://hapifhir.io/fhir/StructureDefinition/subscription-matching-strategy|IN_MEMORY``.
* Creating a matching resource (``ServiceRequest`` with ``status: active``) sends, about 0.1-1.3 s
  later (this peer pushes pending changes every 1000 ms; a stock HAPI every 5000 ms)::

      PUT {endpoint}/ServiceRequest/{id}
      Content-Type: application/fhir+json; charset=UTF-8
      Accept: application/fhir+json;q=1.0, application/json+fhir;q=0.9
      If-Match: W/"{versionId}"
      User-Agent: HAPI-FHIR/8.8.0 (FHIR Client; FHIR 4.0.1/R4; apache)
      Accept-Encoding: gzip
      Authorization: Bearer x                  (each channel.header, split at the first ':')
      Connection: Keep-Alive

  body: the resource itself (compact JSON) with ``id`` and ``meta``
  (``versionId``, ``lastUpdated``, ``source: "#<random>"``), no Bundle.
* An update that still matches (e.g. draft -> active, or any later matching version) sends the
  same PUT with the new version (``If-Match: W/"2"``). A non-matching create (``status: draft``)
  sends nothing.
* Without ``channel.payload`` ("ping"): ``POST {endpoint}`` exactly, ``Content-Length: 0``,
  ``Content-Type: application/x-www-form-urlencoded; charset=UTF-8``, plus the channel headers.
* With the channel extension
  ``http://hapifhir.io/fhir/StructureDefinition/subscription-send-delete-messages = true`` a DELETE
  of a matching resource sends ``DELETE {endpoint}/ServiceRequest/{id}`` (no body, no Content-Type;
  ``Authorization`` is sent), about 0.5-1 s later. Without the extension, deletes send nothing.
* Failure (listener answers 500 or refuses the connection): HAPI retries the same request for
  one minute with exponential back-off (1 s, x1.1 each time): 22 attempts at about
  0, 1.0, 2.1, 3.3, 4.7, 6.2, 7.8 ... 51, 57 s, then drops that notification silently. The
  Subscription stays ``active`` (never ``error``); the next matching change is delivered again.
* Subscriptions persist for the server's lifetime and deliver to every matching change, so tests
  must delete their Subscriptions (as below) or use criteria that only their own data match.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests

FHIR_JSON = "application/fhir+json"
SEND_DELETE_EXT = "http://hapifhir.io/fhir/StructureDefinition/subscription-send-delete-messages"
TIMEOUT_S = 30.0


@dataclass
class Received:
    at: float
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Listener:
    base_url: str
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, method: str, path: str, timeout: float = TIMEOUT_S) -> Received:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for req in self.received:
                    if req.method == method and req.path == path:
                        return req
            time.sleep(0.05)
        with self.lock:
            seen = [(r.method, r.path) for r in self.received]
        raise AssertionError(f"no {method} {path} within {timeout} s; received: {seen}")

    def paths(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(r.method, r.path) for r in self.received]


@pytest.fixture
def listener() -> Iterator[Listener]:
    """A tiny REST-hook receiver on 127.0.0.1 that records every request and answers 200."""
    records: list[Received] = []
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with lock:
                records.append(
                    Received(time.monotonic(), self.command, self.path, dict(self.headers), body)
                )
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_PUT = do_POST = do_DELETE = _record

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="rest-hook-listener", daemon=True)
    thread.start()
    try:
        yield Listener(f"http://127.0.0.1:{server.server_port}", records, lock)
    finally:
        server.shutdown()
        server.server_close()


def _create(base: str, resource: dict) -> dict:
    resp = requests.post(
        f"{base}/{resource['resourceType']}",
        data=json.dumps(resource),
        headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
        timeout=TIMEOUT_S,
    )
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["resourceType"] == resource["resourceType"]
    return created


def test_metadata_is_r4_with_subscriptions(hapi_base_url: str) -> None:
    resp = requests.get(
        f"{hapi_base_url}/metadata", headers={"Accept": FHIR_JSON}, timeout=TIMEOUT_S
    )
    assert resp.status_code == 200
    cap = resp.json()
    assert cap["resourceType"] == "CapabilityStatement"
    assert cap["fhirVersion"] == "4.0.1"
    types = {res["type"] for rest in cap["rest"] for res in rest.get("resource", [])}
    assert {"Subscription", "ServiceRequest", "Patient"} <= types


def test_rest_hook_subscription_delivers_service_request(
    hapi_base_url: str, listener: Listener
) -> None:
    hook = f"/hook/{uuid.uuid4().hex}"
    subscription = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "Refloop interop smoke test",
        "criteria": "ServiceRequest?status=active",
        "channel": {
            "type": "rest-hook",
            "endpoint": listener.base_url + hook,
            "payload": FHIR_JSON,
            "header": ["Authorization: Bearer x"],
            "extension": [{"url": SEND_DELETE_EXT, "valueBoolean": True}],
        },
    }
    t0 = time.monotonic()
    sub = _create(hapi_base_url, subscription)
    sub_url = f"{hapi_base_url}/Subscription/{sub['id']}"
    try:
        # HAPI activates a requested Subscription by itself (no handshake).
        status = sub["status"]
        deadline = time.monotonic() + TIMEOUT_S
        while status != "active" and time.monotonic() < deadline:
            time.sleep(0.1)
            current = requests.get(sub_url, headers={"Accept": FHIR_JSON}, timeout=TIMEOUT_S).json()
            status = current["status"]
            assert status in ("requested", "active"), current
        assert status == "active", f"Subscription not active after {TIMEOUT_S} s"
        activation_s = time.monotonic() - t0

        patient = _create(
            hapi_base_url,
            {"resourceType": "Patient", "name": [{"family": "Interop", "given": ["Smoke"]}]},
        )
        subject = {"reference": f"Patient/{patient['id']}"}
        draft = _create(
            hapi_base_url,
            {
                "resourceType": "ServiceRequest",
                "status": "draft",
                "intent": "order",
                "subject": subject,
            },
        )
        t1 = time.monotonic()
        referral = _create(
            hapi_base_url,
            {
                "resourceType": "ServiceRequest",
                "status": "active",
                "intent": "order",
                "subject": subject,
                "note": [{"text": "interop smoke"}],
            },
        )
        sr_path = f"{hook}/ServiceRequest/{referral['id']}"

        put = listener.wait_for("PUT", sr_path)
        delivery_s = put.at - t1
        assert put.headers.get("Authorization") == "Bearer x"
        assert put.headers.get("Content-Type", "").startswith(FHIR_JSON)
        body = json.loads(put.body)
        assert body["resourceType"] == "ServiceRequest"
        assert body["id"] == referral["id"]
        assert body["status"] == "active"
        assert body["subject"]["reference"] == subject["reference"]
        assert body["note"] == [{"text": "interop smoke"}]
        assert body["meta"]["versionId"] == "1"

        # The draft did not match the criteria: nothing was sent for it.
        time.sleep(2.0)
        assert not [p for m, p in listener.paths() if p.endswith(f"/ServiceRequest/{draft['id']}")]

        # subscription-send-delete-messages: a DELETE of the matching resource is forwarded.
        t2 = time.monotonic()
        resp = requests.delete(
            f"{hapi_base_url}/ServiceRequest/{referral['id']}", timeout=TIMEOUT_S
        )
        assert resp.status_code in (200, 204), resp.text
        deleted = listener.wait_for("DELETE", sr_path)
        assert deleted.headers.get("Authorization") == "Bearer x"
        delete_s = deleted.at - t2

        print(
            f"\nHAPI peer timings: activation {activation_s:.2f} s, "
            f"create->PUT {delivery_s:.2f} s, "
            f"delete->DELETE {delete_s:.2f} s; PUT headers {put.headers}"
        )
    finally:
        # Leave no active Subscription behind: it would keep delivering (and retrying) to a
        # closed port.
        requests.delete(sub_url, timeout=TIMEOUT_S)
