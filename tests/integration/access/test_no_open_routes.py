"""No route answers 2xx to a request without credentials unless it is public on purpose (the
list below, each with its reason). A new route (a /metrics endpoint, say) that forgets the
guard fails here: protect it with `refloop.wiring.access.guard(services)` (docs/security.md)."""

from __future__ import annotations

import re
from pathlib import Path

from refloop.app import create_app
from refloop.services import build_services
from refloop.settings import Settings

#: endpoint -> why anyone may read it
PUBLIC = {
    "healthz": "liveness for load balancers and orchestrators",
    "readyz": "readiness for load balancers (no data, only 'ready' or why not)",
    "fhir.metadata": "FHIR clients read the CapabilityStatement before they have a token",
    "access.smart_configuration": "SMART discovery, read before a token exists",
    "access.fhir_smart_configuration": "SMART discovery under the FHIR base",
    "jwks": "our public keys (EHRs verify our client assertions with them)",
    "smart.jwks": "the SMART app's public keys, for the EHRs it authenticates to",
    "home": "says what Refloop is and where to start (no data)",
    "docs_index": "the project's documentation (no data)",
    "docs_page": "the project's documentation (no data)",
    "favicon": "the site's icon, which browsers ask for before anyone signs in",
    "loop_pages.close": "signing out of a specialist's upload link: it ends the caller's own"
                        " session, if any, and shows only 'Signed out'",
}


def test_every_route_without_credentials_is_refused_unless_public(sqlite_url: str,
                                                                  tmp_path: Path) -> None:
    services = build_services(Settings(var_dir=tmp_path / "var", database_url=sqlite_url))
    try:
        app = create_app(services)
        client = app.test_client()
        opened = []
        for rule in app.url_map.iter_rules():
            path = re.sub(r"<[^>]+>", "x", rule.rule)
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                status = client.open(path, method=method).status_code
                if 200 <= status < 300 and rule.endpoint not in PUBLIC:
                    opened.append(f"{method} {rule.rule} ({rule.endpoint}): {status}")
        assert not opened, "answered without credentials: " + "; ".join(opened)
        for endpoint in PUBLIC:  # the list holds no stale names
            assert endpoint in app.view_functions, endpoint
    finally:
        services.close()
