"""Bad input, table-driven, against `refloop serve`'s web server (the HTTP edge around the Flask
app, on a real loopback port) and the CLI: /hooks, /fhir, /smart and `refloop ...`.

Each row asserts the status, the OperationOutcome code (or a phrase of the page or message),
what was kept in quarantine (how many entries, and their bytes where the row says), and that a
valid request of the same kind succeeds right after. The rows are built here (not official
data). /fhir rows take their credentials from `FHIR_HEADERS` (one place).
"""

from __future__ import annotations

import base64
import copy
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from referrals.store import connect
from referrals.store.migrate import upgrade
from refloop.app import create_edge_app
from refloop.cli import main
from refloop.edge.server import RunningEdge, serve_in_thread
from refloop.services import Services, build_services
from refloop.settings import Settings
from subscriptions.registry import Hook

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "fixtures" / "subscriptions"
SECRET = "{secret}"  # replaced by the hook's secret when a row is sent
HOOK = "{hook}"  # replaced by the hook id
FHIR_TOKEN = "{fhir-token}"  # replaced by a bearer token from the token endpoint (system/*.rs)
#: credentials for /fhir requests, in one place
FHIR_HEADERS: dict[str, str] = {"Authorization": f"Bearer {FHIR_TOKEN}"}


@dataclass(frozen=True)
class Row:
    id: str
    request: bytes  # with {hook} and {secret} placeholders
    status: int
    expect: str  # the OperationOutcome's issue code, or a phrase of an HTML page
    kept: int = 0  # new quarantine entries
    kept_bytes: bytes | None = None  # what the (single) entry holds, when checked
    after: str = "hook"  # which valid request must succeed afterwards
    half_close: bool = True


def http(method: str, target: str, body: bytes | None = None, *, content_type: str =
         "application/fhir+json", headers: dict[str, str] | None = None,
         auth: bool = True) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: refloop.test"]
    if auth and target.startswith("/hooks/"):
        lines.append(f"Authorization: Bearer {SECRET}")
    if auth and target.startswith("/fhir"):
        lines += [f"{k}: {v}" for k, v in FHIR_HEADERS.items()]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body is not None:
        lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


R4 = load("backport-1.1.0/r4/Bundle-r4-notification-full-resource.json")
R4B = load("backport-1.1.0/r4b/Bundle-r4b-notification-full-resource.json")
SR = {"resourceType": "ServiceRequest", "id": "sr-1", "status": "active", "intent": "order"}


def changed(bundle: dict[str, Any], path: list[Any], value: Any) -> bytes:
    copied = copy.deepcopy(bundle)
    target = copied
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return json.dumps(copied).encode()


def message(inner: bytes) -> bytes:
    return json.dumps({"resourceType": "Bundle", "type": "message", "entry": [
        {"resource": {"resourceType": "MessageHeader", "id": "m"}},
        {"resource": json.loads(inner)}]}).encode()


# -- /hooks ------------------------------------------------------------------------------------

PARAMS = ["entry", 0, "resource", "parameter"]
EVENT = [*PARAMS, 5]
STATUS = ["entry", 0, "resource"]
WRONG = {"array": [5, "x", True, 1.5, {"a": 1}, -7],
         "object": [5, "x", True, 1.5, [1]],
         "string": [5, True, 1.5, {"a": 1}, [1]],
         "reference": [5, True, 1.5, [1]]}
STRUCTURE = [
    (R4, ["entry"], "array"), (R4, ["entry", 0], "object"),
    (R4, ["entry", 0, "resource"], "object"), (R4, [*STATUS, "resourceType"], "string"),
    (R4, PARAMS, "array"), (R4, [*PARAMS, 0], "object"), (R4, [*PARAMS, 0, "name"], "string"),
    (R4, [*EVENT, "part"], "array"), (R4, [*EVENT, "part", 0], "object"),
    (R4, [*EVENT, "part", 0, "name"], "string"), (R4, ["type"], "string"),
    (R4B, [*STATUS, "notificationEvent"], "array"),
    (R4B, [*STATUS, "notificationEvent", 0], "object"),
    (R4B, [*STATUS, "notificationEvent", 0, "focus"], "reference"),
    (R4B, [*STATUS, "error"], "array"),
]


def hook_rows() -> list[Row]:
    rows = []
    for bundle, path, kind in STRUCTURE:
        for wrong in WRONG[kind]:
            body = changed(bundle, path, wrong)
            name = "-".join(str(p) for p in path)
            rows.append(Row(f"hook-{name}-{wrong!r}", http("POST", f"/hooks/{HOOK}", body),
                            400, "structure", 1, body))
            inner = message(body)
            rows.append(Row(f"hook-message-{name}-{wrong!r}",
                            http("POST", f"/hooks/{HOOK}", inner), 400, "structure", 1, inner))
    not_json = [b"{", b"{not json", b"\xff\xfe{}", b"[", b'{"a":}', b"nul", b"{'a': 1}",
                b'{"a": 1,}', b'"\\ud800"x', b"\x00", b"1e99999x", b"--", b"{\"a\"", b"]",
                b"9" * 5000]
    for n, body in enumerate(not_json):
        rows.append(Row(f"hook-not-json-{n}", http("POST", f"/hooks/{HOOK}", body), 400,
                        "structure", 1, body))
    not_resource = [b"null", b"5", b'"text"', b"[]", b"[1]", b"true", b"{}", b"NaN",
                    b'{"resourceType": 5}', b'{"resourceType": "Foo"}', b'{"resourceType": ""}',
                    b'{"resourceType": "servicerequest"}', b'{"resourceType": null}',
                    b'{"resourceType": ["Bundle"]}', b'{"resourceType": "Bundle\\u0000"}',
                    # a notification holding an integer no store holds as given (64 bits)
                    changed(R4, ["entry", 0, "resource", "total"], 2**64),
                    changed(R4, ["entry", 0, "resource", "total"], -2**63 - 1)]
    for n, body in enumerate(not_resource):
        rows.append(Row(f"hook-not-resource-{n}", http("POST", f"/hooks/{HOOK}", body), 400,
                        "structure", 1, body))
    for depth in (201, 500, 2000, 10000, 100000):
        body = b"[" * depth + b"]" * depth
        rows.append(Row(f"hook-depth-{depth}", http("POST", f"/hooks/{HOOK}", body), 400,
                        "too-costly", 1, body))
        body = b'{"resourceType":"Bundle","entry":' + b"[{\"resource\":" * depth + b"1" + \
            b"}]" * depth + b"}"
        if len(body) < 1024 * 1024:
            rows.append(Row(f"hook-depth-objects-{depth}", http("POST", f"/hooks/{HOOK}",
                                                                 body), 400, "too-costly", 1))
    mismatch = [
        ("PUT", "ServiceRequest/1", {"resourceType": "Patient", "id": "1"}),
        ("PUT", "ServiceRequest/1", {**SR, "id": "2"}),
        ("POST", "", {"resourceType": "ServiceRequest"}),
        ("POST", "", {"resourceType": "ServiceRequest", "id": "a b"}),
        ("POST", "", {"resourceType": "ServiceRequest", "id": 5}),
        ("POST", "", {"resourceType": "ServiceRequest", "id": "x" * 65}),
        ("PUT", "Patient/1", SR),
        ("POST", "", {"resourceType": "Parameters", "parameter": [{"name": "type",
                                                                  "valueCode": "heartbeat"}]}),
        ("POST", "", {"resourceType": "SubscriptionStatus", "status": "active"}),
        ("POST", "", {"resourceType": "Bundle", "type": "history", "entry": []}),
        ("POST", "", {"resourceType": "Bundle", "type": "history"}),
        ("POST", "", {"resourceType": "Bundle", "type": "history", "entry": [{}]}),
        ("POST", "", {"resourceType": "Bundle", "entry": [{"resource": {
            "resourceType": "Parameters", "parameter": [{"name": "type",
                                                         "valueCode": "bogus"}]}}]}),
    ]
    for n, (method, sub, body) in enumerate(mismatch):
        raw = json.dumps(body).encode()
        code = "code-invalid" if "bogus" in raw.decode() else \
            "required" if n in (2, 3, 5) else "structure"
        rows.append(Row(f"hook-shape-{n}", http(method, f"/hooks/{HOOK}/{sub}".rstrip("/"), raw),
                        400, code, 1, raw))
    rows += [
        Row("hook-put-no-body", http("PUT", f"/hooks/{HOOK}/ServiceRequest/1", b""), 400,
            "required", 1, b""),
        Row("hook-delete-no-path", http("DELETE", f"/hooks/{HOOK}"), 400, "not-supported", 1),
        Row("hook-delete-type-only", http("DELETE", f"/hooks/{HOOK}/ServiceRequest"), 400,
            "not-supported", 1),
        Row("hook-xml", http("POST", f"/hooks/{HOOK}", b"<Bundle/>",
                             content_type="application/fhir+xml"), 415, "not-supported", 1,
            b"<Bundle/>"),
    ]
    body = json.dumps(SR).encode()
    for n, auth in enumerate(["", "Bearer wrong", "Basic abc", "Bearer", f"bearer{SECRET}",
                              "Token {secret}"]):
        request = http("PUT", f"/hooks/{HOOK}/ServiceRequest/sr-1", body, auth=False,
                       headers={"Authorization": auth} if auth else None)
        rows.append(Row(f"hook-auth-{n}", request, 401, "login", 0))
    rows.append(Row("hook-unknown", http("POST", "/hooks/no-such-hook", body), 401, "login", 0))
    head = (f"PUT /hooks/{HOOK}/ServiceRequest/sr-1 HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {SECRET}\r\nContent-Type: application/fhir+json\r\n")
    chunked = head + "Transfer-Encoding: chunked\r\n\r\n"
    rows += [
        Row("hook-truncated", (head + "Content-Length: 500\r\n\r\n").encode() + body, 400,
            "incomplete", 1, body),
        Row("hook-truncated-empty", (head + "Content-Length: 10\r\n\r\n").encode(), 400,
            "incomplete", 1, b""),
        Row("hook-chunk-no-last", chunked.encode() + b"%x\r\n%s\r\n" % (len(body), body), 400,
            "incomplete", 1, body),
        Row("hook-chunk-bad-size", chunked.encode() + b"zz\r\n" + body + b"\r\n0\r\n\r\n",
            400, "structure", 1, b""),
        Row("hook-chunk-size-too-big", chunked.encode() + b"fffffffffffffffffff\r\n", 400,
            "structure", 1),
        Row("hook-chunk-missing-crlf", chunked.encode() + b"5\r\nabcdefg0\r\n\r\n", 400,
            "structure", 1),
        Row("hook-oversized-declared", (head + "Content-Length: 99999999999\r\n\r\n").encode()
            + b"{" * (1024 * 1024 + 10), 413, "too-costly", 1, half_close=False),
        Row("hook-oversized-chunked", chunked.encode() + b"110000\r\n" + b" " * 0x110000
            + b"\r\n0\r\n\r\n", 413, "too-costly", 1, half_close=False),
    ]
    return rows


def framing_rows() -> list[Row]:
    """Broken HTTP before any route: nothing is kept (nobody authenticated)."""
    requests = [
        b"GARBAGE\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"POST /fhir/Task HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET /health\x00z HTTP/1.1\r\nHost: x\r\n\r\n",
        b"G\x01T /healthz HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHo\x7fst: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST /fhir/Task HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nq\r\n",
    ]
    rows = [Row(f"framing-{n}", r, 400, "structure", 0, after="health")
            for n, r in enumerate(requests)]
    rows.append(Row("framing-huge-header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " +
                    b"a" * 70000 + b"\r\n\r\n", 431, "too-costly", 0, after="health",
                    half_close=False))
    rows.append(Row("framing-truncated-headers", b"GET /healthz HTTP/1.1\r\nHost: x\r\n", 400,
                    "structure", 0, after="health"))
    heads = [("connect", b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n",
              405, "not-supported"),
             ("connect-then-get", b"CONNECT example.org:443 HTTP/1.1\r\nHost: x\r\n\r\n"
              b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 405, "not-supported"),
             ("upgrade", b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
              b"Upgrade: websocket\r\n\r\n", 400, "not-supported"),
             ("two-hosts", b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400,
              "structure"),
             ("same-host-twice", b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
              400, "structure"),
             ("no-host", b"GET /healthz HTTP/1.1\r\n\r\n", 400, "structure"),
             ("no-host-then-get", b"GET /healthz HTTP/1.1\r\n\r\n"
              b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400, "structure"),
             ("bad-host", b"GET /healthz HTTP/1.1\r\nHost: a b/c\r\n\r\n", 400, "structure"),
             ("two-hosts-post", b"POST /fhir/Task HTTP/1.1\r\nHost: a\r\nHost: b\r\n"
              b"Content-Length: 2\r\n\r\n{}", 400, "structure")]
    rows += [Row(f"head-{name}", raw, status, code, 0, after="health")
             for name, raw, status, code in heads]
    bearer = f"Authorization: Bearer {FHIR_TOKEN}\r\n".encode()
    rows.append(Row("framing-fhir-body-truncated", b"POST /fhir/Task HTTP/1.1\r\nHost: x\r\n"
                    + bearer + b"Content-Length: 50\r\n\r\n{}", 400, "incomplete", 0,
                    after="fhir"))
    rows.append(Row("framing-fhir-oversized", b"POST /fhir/Task HTTP/1.1\r\nHost: x\r\n"
                    + bearer + b"Content-Length: 99999999999\r\n\r\n" + b"{" * 70000, 413,
                    "too-costly", 0, after="fhir", half_close=False))
    huge = b"Content-Length: 99999999999\r\n\r\n" + b"x" * 70000
    rows.append(Row("oversized-fhir-half-closed", b"POST /fhir/Task HTTP/1.1\r\nHost: x\r\n"
                    + bearer + b"Content-Length: 99999999999\r\n\r\n{}", 413, "too-costly", 0,
                    after="fhir"))
    rows.append(Row("oversized-token", b"POST /auth/token HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/x-www-form-urlencoded\r\n" + huge, 413,
                    "oauth:invalid_request", 0, after="fhir", half_close=False))
    rows.append(Row("oversized-smart", b"POST /smart/s/abc/referrals/x/act HTTP/1.1\r\n"
                    b"Host: x\r\nContent-Type: application/x-www-form-urlencoded\r\n" + huge,
                    413, "Request Entity Too Large", 0, after="health", half_close=False))
    rows.append(Row("oversized-patient-page", b"POST /p/nope HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/x-www-form-urlencoded\r\n" + huge, 413,
                    "That was too much to send", 0, after="health", half_close=False))
    rows.append(Row("oversized-unsubscribe", b"POST /outreach/unsubscribe/nope HTTP/1.1\r\n"
                    b"Host: x\r\nContent-Type: application/x-www-form-urlencoded\r\n" + huge,
                    413, "Too much to send", 0, after="health", half_close=False))
    rows.append(Row("oversized-loop-bad-link", b"POST /loop/u/nope HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: multipart/form-data; boundary=b\r\n" + huge, 404,
                    "This link does not work", 0, after="health", half_close=False))
    return rows


# -- /fhir -------------------------------------------------------------------------------------

def fhir_rows() -> list[Row]:
    queries = {
        "invalid": ["_lastUpdated=9999", "_lastUpdated=9999-12", "_lastUpdated=gt9999-12-31",
                    "_lastUpdated=le9999-12-31T23:59:59-12:00",
                    "_lastUpdated=ge0001-01-01T00:00:00%2B14:00", "_lastUpdated=2026-13",
                    "_lastUpdated=2026-02-30", "_lastUpdated=20260101", "_lastUpdated=2026-W01",
                    "_lastUpdated=%D9%A2%D9%A0%D9%A2%D9%A6", "_lastUpdated=yesterday",
                    "_lastUpdated=ge", "_lastUpdated=2026-01-01T25:00:00Z",
                    "_lastUpdated=2026-01-01T10:00:00%2B15:00", "_lastUpdated=0000",
                    "_lastUpdated=10000-01-01", "_lastUpdated=9999-12-31T23:59:59.999999Z",
                    "_lastUpdated=2026-01-01,2026-02-01", "_offset=99999999999999999999",
                    f"_offset={2 ** 63}", f"_offset={2 ** 64}", "_offset=-1", "_offset=%2B5",
                    "_offset=1e3", "_offset=%D9%A3", "_offset=1000000001", "_count=-5",
                    f"_count={2 ** 63}", "_count=abc", "_count=", "_offset=%205",
                    "status=bogus", "status=http://other|completed", "business-status=9.9",
                    "_id=%00", "patient=Patient/%00", "_lastUpdated=%00", "%00=1",
                    "status=", "_id=,,,"],
        "not-supported": ["bogus=1", "status:missing=true", "_sort=status", "_lastUpdated=ne2026",
                          "_lastUpdated=sa2026", "_elements=id", "_include=Task:owner"],
    }
    rows = [Row(f"fhir-{code}-{n}", http("GET", f"/fhir/Task?{q}"), 400, code, 0, after="fhir")
            for code, items in queries.items() for n, q in enumerate(items)]
    rows += [Row(f"fhir-read-{n}", http("GET", f"/fhir/Task/{tid}"), 404, "not-found", 0,
                 after="fhir")
             for n, tid in enumerate(["%00", "x" * 200, "a%20b", "..", "%C0%AE", "nope"])]
    rows += [Row(f"fhir-unknown-{n}", http(method, path), 404, "not-supported", 0, after="fhir")
             for n, (method, path) in enumerate([("GET", "/fhir/Patient"),
                                                 ("POST", "/fhir/Task"),
                                                 ("DELETE", "/fhir/Task/1"),
                                                 ("PATCH", "/fhir/Task/1"),
                                                 ("GET", "/fhir/Task/1/_history/2")])]
    return rows


def _jwt(header: dict[str, Any], claims: Any, signature: str = "") -> str:
    def part(data: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return f"{part(header)}.{part(claims)}.{signature}"


UNSIGNED = _jwt({"alg": "none", "kid": "tests-es384"},
                {"iss": "x", "sub": "x", "aud": "http://127.0.0.1:8080/auth/token",
                 "exp": 4102444800, "jti": "j"})
FOREIGN = _jwt({"alg": "RS256", "kid": "k"}, {"iss": "https://as.example", "sub": "u",
                                              "aud": "x", "exp": 4102444800, "scope":
                                              "system/Task.rs"}, "c2lnbmF0dXJl")


def auth_rows() -> list[Row]:
    """The facade without a usable token (401, nothing kept, no query parsed), and the token
    endpoint's refusals (OAuth error JSON)."""
    headers = ["", "Bearer", "Bearer ", "Bearer garbage", "Basic dXNlcjpwYXNz", "Bearer a b c",
               "Bearer " + "x" * 9000, "Bearer tok%00en", "Bearer {fhir-token}x",
               "Bearer x{fhir-token}", f"Bearer {UNSIGNED}", f"Bearer {FOREIGN}",
               "Bearer a.b.c", "Bearer ....", "Token {fhir-token}", "Bearer\t{fhir-token}x",
               "Bearer " + "é" * 10, "Bearer =abc", "Negotiate abc", "Digest username=x"]
    targets = [("GET", "/fhir/Task"), ("GET", "/fhir/Task/x"), ("GET", "/fhir/Patient/1"),
               ("POST", "/fhir/Task"), ("GET", "/fhir/Task?_lastUpdated=9999"),
               ("GET", "/fhir/Task?_offset=99999999999999999999"), ("DELETE", "/fhir/Task/1")]
    rows = [Row(f"fhir-auth-{n}", http("GET", "/fhir/Task?_count=1", auth=False,
                                       headers={"Authorization": h} if h else None),
                401, "login", 0, after="fhir") for n, h in enumerate(headers)]
    rows += [Row(f"fhir-auth-none-{n}", http(method, target, auth=False), 401, "login", 0,
                 after="fhir") for n, (method, target) in enumerate(targets)]
    form = "application/x-www-form-urlencoded"
    assertion = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    token_forms = [
        ("", "oauth:unsupported_grant_type"),
        ("grant_type=password&username=a&password=b", "oauth:unsupported_grant_type"),
        ("grant_type=authorization_code&code=x", "oauth:unsupported_grant_type"),
        ("grant_type=client_credentials", "oauth:invalid_client"),
        ("grant_type=client_credentials&scope=system/Task.rs", "oauth:invalid_client"),
        (f"grant_type=client_credentials&client_assertion_type=x&client_assertion={UNSIGNED}",
         "oauth:invalid_client"),
        (f"grant_type=client_credentials&client_assertion_type={assertion}"
         "&client_assertion=garbage", "oauth:invalid_client"),
        (f"grant_type=client_credentials&client_assertion_type={assertion}"
         f"&client_assertion={UNSIGNED}", "oauth:invalid_client"),
        (f"grant_type=client_credentials&client_assertion_type={assertion}"
         f"&client_assertion={_jwt({'alg': 'ES384'}, {'sub': 5})}", "oauth:invalid_client"),
        (f"grant_type=client_credentials&client_assertion_type={assertion}"
         f"&client_assertion={_jwt({'alg': 'ES384'}, [1, 2])}", "oauth:invalid_client"),
        (f"grant_type=client_credentials&client_assertion_type={assertion}"
         f"&client_assertion={'A' * 200000}", "oauth:invalid_client"),
        (f"grant_type=client_credentials&client_assertion_type={assertion}"
         f"&client_assertion={FOREIGN}", "oauth:invalid_client"),
        ("grant_type=client_credentials&grant_type=client_credentials", "oauth:invalid_request"),
        ("grant_type=%00", "oauth:unsupported_grant_type"),
    ]
    for n, (body, expect) in enumerate(token_forms):
        rows.append(Row(f"token-{n}", http("POST", "/auth/token", body.encode(),
                                           content_type=form), 400, expect, 0, after="fhir"))
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        rows.append(Row(f"token-method-{method}", http(method, "/auth/token"), 405,
                        "oauth:invalid_request", 0, after="fhir"))
    rows.append(Row("token-longer-path", http("POST", "/auth/token/x", b"grant_type=x",
                                              content_type=form), 404, "oauth:invalid_request",
                    0, after="fhir"))
    rows.append(Row("token-json-body", http("POST", "/auth/token",
                                            b'{"grant_type": "client_credentials"}',
                                            content_type="application/json"), 400,
                    "oauth:unsupported_grant_type", 0, after="fhir"))
    return rows


def smart_rows() -> list[Row]:
    pages = [("/smart/launch", 400, "launch"), ("/smart/launch?iss=http://evil.example", 400,
                                                 "launch"),
             ("/smart/launch?iss=", 400, "launch"), ("/smart/launch?iss=%00", 400, "launch"),
             ("/smart/launch?iss=" + "a" * 5000, 400, "launch"),
             ("/smart/callback", 400, "<html"), ("/smart/callback?state=x&code=y", 400, "<html"),
             ("/smart/callback?error=access_denied", 400, "<html"),
             ("/smart/callback?state=%00&code=%00", 400, "<html"),
             ("/smart/s/abc/", 401, "<html"), ("/smart/s/abc/dashboard", 401, "<html"),
             ("/smart/s/abc/referrals/x", 401, "<html"), ("/smart/s/%00/", 401, "<html"),
             ("/smart/s/" + "x" * 300 + "/", 401, "<html"), ("/smart/nothing", 404, "Not Found")]
    rows = [Row(f"smart-{n}", http("GET", path), status, phrase, 0, after="smart")
            for n, (path, status, phrase) in enumerate(pages)]
    form = b"action=accept&csrf=x"
    rows.append(Row("smart-act-no-session", http("POST", "/smart/s/abc/referrals/x/act", form,
                                                 content_type="application/x-www-form-urlencoded"),
                    401, "<html", 0, after="smart"))
    return rows


ROWS = hook_rows() + framing_rows() + fhir_rows() + auth_rows() + smart_rows()


# -- the server --------------------------------------------------------------------------------

@dataclass
class Served:
    services: Services
    edge: RunningEdge
    hook: Hook
    fhir_token: str = ""
    sent: int = 0

    def exchange(self, raw: bytes, half_close: bool = True) -> tuple[int, dict[str, str], bytes]:
        raw = raw.replace(HOOK.encode(), self.hook.id.encode()).replace(
            SECRET.encode(), self.hook.secret.encode()).replace(
            FHIR_TOKEN.encode(), self.fhir_token.encode())
        with socket.create_connection(("127.0.0.1", self.edge.port), timeout=10) as sock:
            try:
                sock.sendall(raw)
                if half_close:
                    sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            chunks = []
            while True:
                try:
                    chunk = sock.recv(65536)
                except (TimeoutError, ConnectionResetError):
                    break
                if not chunk:
                    break
                chunks.append(chunk)
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
        return int(lines[0].split()[1]), headers, body

    def valid(self, kind: str) -> None:
        """A valid request of the same kind succeeds."""
        if kind == "hook":
            self.sent += 1
            body = json.dumps({**SR, "id": f"ok-{self.sent}"}).encode()
            before = self.services.inbox.counts().get("received", 0)
            status, _, _ = self.exchange(http("PUT", f"/hooks/{HOOK}/ServiceRequest/ok-"
                                                     f"{self.sent}", body))
            assert status == 200
            assert self.services.inbox.counts().get("received", 0) == before + 1
        elif kind == "fhir":
            status, _, body = self.exchange(http("GET", "/fhir/Task?_count=1"))
            assert status == 200 and json.loads(body)["resourceType"] == "Bundle"
        elif kind == "smart":
            status, _, body = self.exchange(http("GET", "/smart/jwks.json"))
            assert status == 200 and "keys" in json.loads(body)
        else:
            status, _, body = self.exchange(http("GET", "/healthz"))
            assert status == 200 and json.loads(body) == {"status": "ok"}


def serve(database_url: str, var: Path, fhir_auth: Any) -> Served:
    services = build_services(Settings(var_dir=var, database_url=database_url,
                                       http_request_timeout=5.0, log_level="WARNING"))
    subs = services.adapters["subscriptions"]
    hook = subs.registry.open_hook(server="http://ehr.invalid/fhir", purpose="referrals",
                                   deliver_kind="subscriptions.referral")
    served = Served(services, serve_in_thread(create_edge_app(services)), hook)
    served.fhir_token = fhir_auth.token(f"http://127.0.0.1:{served.edge.port}", services)
    return served


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, fhir_auth: Any) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("bad-input")
    url = f"sqlite:///{tmp / 'refloop.db'}"
    db = connect(url)
    upgrade(db)
    db.dispose()
    running = serve(url, tmp / "var", fhir_auth)
    yield running
    running.edge.stop()
    running.services.close()


def check(served: Served, row: Row) -> None:
    before = served.services.quarantine.list(limit=100000)
    status, headers, body = served.exchange(row.request, row.half_close)
    assert status == row.status, (row.id, body[:300])
    assert len(body) == int(headers["content-length"]), (row.id, "one answer", body[:600])
    if row.id.startswith("head-"):
        assert headers["connection"] == "close", row.id
    if status == 405:
        assert headers["allow"], row.id
    if row.expect.startswith("oauth:"):
        assert json.loads(body)["error"] == row.expect.removeprefix("oauth:"), (row.id, body)
        assert headers["cache-control"] == "no-store"
    elif row.expect.startswith("<") or " " in row.expect or row.expect[:1].isupper() or \
            row.after == "smart":
        assert row.expect.encode() in body or row.expect == "launch", (row.id, body[:200])
        assert b"<html" in body.lower() or b"<!doctype" in body.lower()
    else:
        outcome = json.loads(body)
        assert outcome["resourceType"] == "OperationOutcome", row.id
        assert outcome["issue"][0]["code"] == row.expect, (row.id, outcome)
        assert headers["content-type"] == "application/fhir+json"
        if status == 401 and row.id.startswith("fhir-"):
            assert headers["www-authenticate"].startswith('Bearer realm="refloop"'), row.id
    after = served.services.quarantine.list(limit=100000)
    new = [e for e in after if e.id not in {b.id for b in before}]
    assert len(new) == row.kept, (row.id, [e.reason for e in new])
    if row.kept_bytes is not None:
        assert bytes(new[0].original) == row.kept_bytes, row.id
    served.valid(row.after)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_request(served: Served, row: Row) -> None:
    check(served, row)


def test_the_table_is_large_enough() -> None:
    assert len(ROWS) + len(CLI_ROWS) >= 300


#: the issue's own list, also on PostgreSQL (and SQLite) with a fresh server each
LISTED = [r for r in ROWS if r.id in {
    "hook-entry-5", "hook-entry-0-resource-parameter-5", "hook-entry-0-resource-parameter-0-name"
    "-{'a': 1}", "hook-entry-0-resource-parameter-5-part-5", "hook-depth-2000",
    "hook-depth-10000", "hook-chunk-bad-size", "hook-chunk-no-last", "hook-truncated",
    "hook-not-resource-0", "hook-not-resource-9", "hook-oversized-declared", "fhir-invalid-0",
    "fhir-invalid-1", "fhir-invalid-2", "fhir-invalid-3", "fhir-invalid-4", "fhir-invalid-18",
    "fhir-invalid-19", "fhir-invalid-34", "fhir-read-0", "smart-3", "smart-12"}]


def test_the_listed_cases_on_both_databases(database_url: str, tmp_path: Path,
                                            fhir_auth: Any) -> None:
    assert len(LISTED) >= 20
    running = serve(database_url, tmp_path / "var", fhir_auth)
    try:
        for row in LISTED:
            check(running, row)
    finally:
        running.edge.stop()
        running.services.close()


# -- the CLI -----------------------------------------------------------------------------------

#: (id, arguments, environment, expected exit code, phrase of the message)
CLI_ROWS: list[tuple[str, list[str], dict[str, str], int, str]] = [
    ("show-unknown", ["referrals", "show", "nope"], {}, 1, "no referral nope"),
    ("list-bad-status", ["referrals", "list", "--status", "bogus"], {}, 2, "bogus"),
    ("list-bad-limit", ["referrals", "list", "--limit", "abc"], {}, 2, "abc"),
    ("unknown-command", ["frobnicate"], {}, 2, "No such command"),
    ("quarantine-bad-flag", ["quarantine", "list", "--bogus"], {}, 2, "No such option"),
    ("rotate-unknown", ["subscriptions", "rotate-secret", "nope"], {}, 1, "no hook 'nope'"),
    ("rotate-missing-arg", ["subscriptions", "rotate-secret"], {}, 2, "HOOK_ID"),
    ("reconcile-no-base", ["reconcile"], {}, 2, "--fhir-base"),
    ("register-bad-auth", ["register", "--fhir-base", "http://x/fhir", "--auth", "magic"], {},
     2, "magic"),
    ("port-text", ["db", "status"], {"REFLOOP_HTTP_PORT": "abc"}, 1, "REFLOOP_HTTP_PORT"),
    ("port-range", ["db", "status"], {"REFLOOP_HTTP_PORT": "70000"}, 1, "not a TCP port"),
    ("log-level", ["db", "status"], {"REFLOOP_LOG_LEVEL": "LOUD"}, 1, "REFLOOP_LOG_LEVEL"),
    ("synchronous", ["db", "status"], {"REFLOOP_SQLITE_SYNCHRONOUS": "maybe"}, 1,
     "REFLOOP_SQLITE_SYNCHRONOUS"),
    ("workers-zero", ["db", "status"], {"REFLOOP_WEB_WORKERS": "0"}, 1, "at least 1"),
    ("threads-zero", ["db", "status"], {"REFLOOP_WEB_THREADS": "0"}, 1, "at least 1"),
    ("timeout-zero", ["db", "status"], {"REFLOOP_HTTP_REQUEST_TIMEOUT": "0"}, 1,
     "more than 0"),
    ("timeout-text", ["db", "status"], {"REFLOOP_HTTP_REQUEST_TIMEOUT": "soon"}, 1,
     "http_request_timeout"),
    ("per-source-negative", ["db", "status"], {"REFLOOP_HTTP_MAX_CONNECTIONS_PER_SOURCE": "-1"},
     1, "0 (no limit) or more"),
    ("max-body-zero", ["db", "status"], {"REFLOOP_HTTP_MAX_BODY_BYTES": "0"}, 1, "at least 1"),
    ("database-url", ["db", "status"], {"REFLOOP_DATABASE_URL": "mysql://x/y"}, 1,
     "REFLOOP_DATABASE_URL"),
    ("missing-config", ["db", "status"], {"REFLOOP_CONFIG": "/nonexistent/refloop.toml"}, 1,
     "does not exist"),
    ("subscriptions-rate-text", ["subscriptions", "list"],
     {"REFLOOP_SUBSCRIPTIONS__RATE_LIMIT": "fast"}, 1, "rate_limit"),
    ("subscriptions-unknown-key", ["subscriptions", "list"],
     {"REFLOOP_SUBSCRIPTIONS__BOGUS": "1"}, 1, "unknown key"),
    ("unreachable-postgres", ["referrals", "list"],
     {"REFLOOP_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}, 1, "cannot use"),
    ("work-unknown", ["work", "frob"], {}, 2, "No such command"),
]


@pytest.fixture(scope="module")
def cli_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("bad-cli")
    url = f"sqlite:///{tmp / 'refloop.db'}"
    db = connect(url)
    upgrade(db)
    db.dispose()
    config = tmp / "refloop.toml"
    config.write_text(f'database_url = "{url}"\nvar_dir = "{tmp / "var"}"\n'
                      'log_level = "WARNING"\n')
    return config


@pytest.mark.parametrize("row", CLI_ROWS, ids=[r[0] for r in CLI_ROWS])
def test_bad_command(cli_config: Path, row: tuple[str, list[str], dict[str, str], int, str],
                     monkeypatch: pytest.MonkeyPatch) -> None:
    _id, args, env, code, phrase = row
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    config = [] if "REFLOOP_CONFIG" in env else ["--config", str(cli_config)]
    result = runner.invoke(main, [*config, *args])
    assert result.exit_code == code, result.output
    assert phrase in result.output, result.output
    assert "Traceback" not in result.output
    for name in env:
        monkeypatch.delenv(name)
    ok = runner.invoke(main, ["--config", str(cli_config), "quarantine", "list", "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout) == []  # nothing kept, still working
