"""Shared fixtures: a fresh database per test on SQLite and on PostgreSQL, and the services.

PostgreSQL comes from REFLOOP_TEST_POSTGRES_URL (`make test` starts a private cluster with
scripts/postgres). Without it the PostgreSQL cases skip with a clear reason, unless
REFLOOP_REQUIRE_POSTGRES=1 (set by .ci/run), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from referrals.store import Database, connect
from referrals.store.migrate import upgrade
from refloop.services import Services, build_services
from refloop.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT / "tests" / "support"))
PG_URL = os.environ.get("REFLOOP_TEST_POSTGRES_URL", "")
#: per test session, so concurrent runs against one cluster never collide
TEMPLATE = f"refloop_tmpl_{os.getpid()}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT).parts
        if len(parts) > 1 and parts[0] == "tests" and parts[1] in ("unit", "integration",
                                                                    "interop"):
            item.add_marker(getattr(pytest.mark, parts[1]))


def require_postgres() -> str:
    if PG_URL:
        return PG_URL
    reason = ("PostgreSQL: REFLOOP_TEST_POSTGRES_URL is not set; 'make test' starts a test "
              "cluster (scripts/postgres start)")
    if os.environ.get("REFLOOP_REQUIRE_POSTGRES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A migrated template database; each test clones it (CREATE DATABASE ... TEMPLATE).
    Databases that crashed or interrupted runs left behind are dropped first (pg_leftovers)."""
    from pg_leftovers import drop_stale

    url = require_postgres()
    admin = sa.create_engine(_psycopg(url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {TEMPLATE}"))
    drop_stale(admin, url, TEMPLATE)
    admin.dispose()
    template = connect(_with_db(url, TEMPLATE))
    upgrade(template)
    template.dispose()
    yield url
    admin = sa.create_engine(_psycopg(url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)"))
    admin.dispose()


def _psycopg(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def _with_db(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database: SQLite file in tmp_path, or a PostgreSQL clone."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'refloop.db'}"
        db = connect(url)
        upgrade(db)
        db.dispose()
        yield url
        return
    from pg_leftovers import drop_database

    base = request.getfixturevalue("postgres_template")
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(_psycopg(base), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
    try:
        yield _with_db(base, name)
    finally:
        drop_database(admin, name)
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh, migrated SQLite database only (tests of SQLite-specific behaviour)."""
    url = f"sqlite:///{tmp_path / 'refloop.db'}"
    db = connect(url)
    upgrade(db)
    db.dispose()
    return url


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = connect(database_url)
    yield db
    db.dispose()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(var_dir=tmp_path / "var", database_url=database_url)


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    built = build_services(settings)
    yield built
    built.close()


@pytest.fixture
def sqlite_services(sqlite_url: str, tmp_path: Path) -> Iterator[Services]:
    built = build_services(Settings(var_dir=tmp_path / "var", database_url=sqlite_url))
    yield built
    built.close()


# -- bearer tokens for the FHIR facade --------------------------------------------------------

class FhirAuth:
    """A test API client: one ES384 key per test session, registered in a test's database on
    first use (`refloop clients add` does the same), and tokens from the real token endpoint
    (private_key_jwt, as SMART Backend Services clients do).

        headers = fhir_auth.headers(client, services)                 # system/*.rs
        headers = fhir_auth.headers(base_url, services, "system/Task.r")
        flask_client.environ_base.update(fhir_auth.environ(flask_client, services))

    `target` is a Flask test client or the base URL of a running server; `services` is the
    Services of the database that server uses.
    """

    def __init__(self) -> None:
        from joserfc.jwk import ECKey

        self.key = ECKey.generate_key("P-384", parameters={"kid": "tests-es384"}, private=True)

    def client_id(self, services: Services, scope: str = "system/*.rs",
                  tenant: str | None = None) -> str:
        from refloop.wiring.access import access_of

        registry = access_of(services).clients
        name = f"tests {scope} {tenant or ''}".strip()
        found = registry.find(name)
        if found is not None:
            return found.client_id
        public = {"keys": [self.key.as_dict(private=False)]}
        return registry.add(name=name, scopes=scope.split(), jwks=public,
                            tenant=tenant).client_id

    def token(self, target: Any, services: Services, scope: str = "system/*.rs",
              tenant: str | None = None) -> str:
        from access.client import ASSERTION_TYPE, build_assertion

        client_id = self.client_id(services, scope, tenant)
        discovery = _get_json(target, "/.well-known/smart-configuration")
        token_url = discovery["token_endpoint"]
        form = {"grant_type": "client_credentials", "scope": scope,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": build_assertion(self.key, "tests-es384", "ES384",
                                                    client_id=client_id, token_url=token_url)}
        status, body = _post_form(target, form)
        assert status == 200, body
        return str(body["access_token"])

    def headers(self, target: Any, services: Services, scope: str = "system/*.rs",
                tenant: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(target, services, scope, tenant)}"}

    def environ(self, target: Any, services: Services, scope: str = "system/*.rs",
                tenant: str | None = None) -> dict[str, str]:
        """For FlaskClient.environ_base: every later request of that client carries it."""
        return {"HTTP_AUTHORIZATION": self.headers(target, services, scope, tenant)[
            "Authorization"]}


def _get_json(target: Any, path: str) -> Any:
    if isinstance(target, str):
        import requests

        return requests.get(target.rstrip("/") + path, timeout=10).json()
    return target.get(path).get_json()


#: the token endpoint's route in the app (the public URL may add a proxy's path prefix)
TOKEN_ROUTE = "/auth/token"


def _post_form(target: Any, form: dict[str, str]) -> tuple[int, Any]:
    if isinstance(target, str):
        import requests

        response = requests.post(target.rstrip("/") + TOKEN_ROUTE, data=form, timeout=10)
        return response.status_code, response.json()
    answer = target.post(TOKEN_ROUTE, data=form)
    return answer.status_code, answer.get_json()


@pytest.fixture(scope="session")
def fhir_auth() -> FhirAuth:
    return FhirAuth()
