"""Fixtures for the SMART app: the strict EHR (strict_ehr.py), our app served on 127.0.0.1:0
with a real database (SQLite and PostgreSQL), and a cookie-keeping HTTP client. The helpers are in
smart_harness.py."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from joserfc.jwk import RSAKey

sys.path.insert(0, str(Path(__file__).resolve().parent))

from smart_harness import CLIENT_ID, SCOPES, Capture, Harness, Served, smart_settings
from strict_ehr import StrictEhr

from refloop.app import create_app
from refloop.services import build_services


@pytest.fixture
def ehr() -> Iterator[StrictEhr]:
    server = StrictEhr().start()
    server.add({"resourceType": "Practitioner", "id": "coord-1",
                "name": [{"given": ["Casey"], "family": "Coordinator"}]})
    server.add({"resourceType": "Patient", "id": "p1",
                "name": [{"given": ["Ada"], "family": "Lovelace"}], "birthDate": "1970-01-01"})
    yield server
    server.stop()


@pytest.fixture
def app_key(tmp_path: Path) -> tuple[Path, RSAKey]:
    key = RSAKey.generate_key(2048, parameters={"kid": "refloop-1"})
    path = tmp_path / "smart-key.pem"
    path.write_bytes(key.as_pem(private=True))
    return path, key


@pytest.fixture
def harness(database_url: str, tmp_path: Path, ehr: StrictEhr,
            app_key: tuple[Path, RSAKey]) -> Iterator[Harness]:
    key_file, key = app_key
    served = Served()
    url = served.url
    services = build_services(smart_settings(database_url, tmp_path, ehr, key_file, url))
    served.app = create_app(services)
    ehr.register(CLIENT_ID, f"{url}/smart/callback", SCOPES,
                 jwks={"keys": [key.as_dict(private=False) | {"kid": "refloop-1"}]})
    capture = Capture()
    logging.getLogger().addHandler(capture)
    previous = logging.getLogger().level
    logging.getLogger().setLevel(logging.DEBUG)
    for noisy in ("werkzeug", "urllib3"):  # as refloop.logs.configure_logging does
        logging.getLogger(noisy).setLevel(logging.WARNING)
    built = Harness(ehr, services, url, key_file, logs=capture.records)
    yield built
    logging.getLogger().removeHandler(capture)
    logging.getLogger().setLevel(previous)
    served.stop()
    services.close()
