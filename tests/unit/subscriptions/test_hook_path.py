"""Which URL paths the lean hook application answers itself (the rest goes to Flask)."""

from __future__ import annotations

import pytest

from subscriptions.hook_wsgi import parse_hook_path


@pytest.mark.parametrize(("path", "expected"), [
    ("/hooks/abc", ("abc", "", "/hooks/<hook_id>")),
    ("/hooks/abc/", ("abc", "", "/hooks/<hook_id>")),
    ("/hooks/abc/ServiceRequest/1", ("abc", "ServiceRequest/1", "/hooks/<hook_id>/<path:subpath>")),
    ("/hooks/abc/ServiceRequest/1/", ("abc", "ServiceRequest/1/",
                                      "/hooks/<hook_id>/<path:subpath>")),
    ("/hooks/", None),
    ("/hooks//x", None),
    ("/hooks/abc//ServiceRequest/1", None),
    ("/hook/abc", None),
    ("/healthz", None),
])
def test_regular_hook_paths_only(path: str, expected: tuple[str, str, str] | None) -> None:
    assert parse_hook_path(path) == expected
