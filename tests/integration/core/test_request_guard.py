"""The app's own answers to a router redirect (never built from the Host header) and the
request line the catch-all keeps (no SMART session id)."""

from __future__ import annotations

from refloop.app import FAILED_REQUEST, create_app, keep_request
from refloop.services import Services

SESSION = "xEWnTrhGSTGwaZxjdX9d4wgD5sHRR9NgFUGWUmUy9-o"


def test_redirects_are_path_only_whatever_the_host_header(sqlite_services: Services) -> None:
    client = create_app(sqlite_services).test_client()
    for path, target in (("/fhir//Task?_count=1", "/fhir/Task?_count=1"), ("/docs", "/docs/"),
                         (f"/smart/s/{SESSION}", f"/smart/s/{SESSION}/")):
        answer = client.get(path, headers={"Host": "evil.example:444"})
        assert answer.status_code == 308 and answer.headers["Location"] == target
        assert b"evil" not in answer.data
        assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_the_catch_all_keeps_no_session_id(services: Services) -> None:
    keep_request(services, "GET", f"/smart/s/{SESSION}/dashboard/referrals?cohort=9999-12-31",
                 b"", "internal error x: OverflowError")
    [kept] = services.quarantine.list()
    assert kept.kind == FAILED_REQUEST
    assert SESSION.encode() not in kept.original
    assert kept.original.startswith(b"GET /smart/s/[redacted]/dashboard/referrals?cohort=")
