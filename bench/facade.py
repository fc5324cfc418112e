"""The authenticated FHIR facade: what a bearer token check and the AuditEvent cost per request.

Through the Flask test client (no sockets), on a store of 2,000 referrals:
- baseline: GET /healthz (a bare endpoint, same app, same run);
- GET /fhir/Task/{id} and GET /fhir/Task?_count=20 with a token Refloop issued (hash lookup,
  scope check, AuditEvent write);
- the same read with a tenant's JWT access token (RS256 signature check against a cached JWK
  Set, no database lookup for the token);
- token requests (POST /auth/token: assertion check, jti and token rows).

    .venv/bin/python bench/facade.py [--databases sqlite,postgresql] [--seconds 3]

PostgreSQL comes from REFLOOP_TEST_POSTGRES_URL (a scratch database is created and dropped).
Prints `metric: value unit` lines and each rate's ratio to the baseline.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # before bench/ (names clash)
from scratch import scratch_postgres

from access.client import ASSERTION_TYPE, build_assertion
from referrals.model import Command, Referral, new_referral_id
from referrals.store import connect
from referrals.store.migrate import upgrade
from refloop.app import create_app
from refloop.services import build_services
from refloop.settings import Settings
from refloop.wiring.access import access_of

REFERRALS = 2000
BASE = "https://refloop.bench"


def rate(call: Callable[[], Any], seconds: float) -> float:
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        call()
        done += 1
    return done / (time.perf_counter() - started)


@contextmanager
def database(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'facade.db'}"
        return
    server = os.environ.get("REFLOOP_BENCH_POSTGRES_URL") or \
        os.environ.get("REFLOOP_TEST_POSTGRES_URL")
    if not server:
        raise SystemExit("PostgreSQL: set REFLOOP_TEST_POSTGRES_URL")
    with scratch_postgres(server, "bench_facade") as url:
        yield url


def run(kind: str, seconds: float) -> None:
    from joserfc import jwt
    from joserfc.jwk import ECKey, RSAKey

    with tempfile.TemporaryDirectory() as tmp_name, database(kind, Path(tmp_name)) as url:
        tmp = Path(tmp_name)
        db = connect(url)
        upgrade(db)
        db.dispose()
        issuer_key = RSAKey.generate_key(2048, parameters={"kid": "as-1"}, private=True)
        settings = Settings(var_dir=tmp / "var", database_url=url, public_base_url=BASE,
                            log_level="WARNING", sections={"access": {"tenants": [{
                                "name": "t", "sources": ["b"], "issuer": "https://as.bench",
                                "jwks_uri": "http://127.0.0.1:9/unused"}]}})
        services = build_services(settings)
        ids = []
        for i in range(REFERRALS):
            referral, _ = services.referrals.open(Referral(
                id=new_referral_id(), source_key=f"b|{i}", service_request=f"ServiceRequest/{i}",
                patient=f"Patient/{i % 300}"), Command("detect"))
            ids.append(referral.id)
        access = access_of(services)
        from joserfc.jwk import KeySet

        access.keys._sets["http://127.0.0.1:9/unused"] = (  # the tenant's keys, as if fetched
            time.monotonic() + 3600, time.monotonic(),
            KeySet.import_key_set({"keys": [issuer_key.as_dict(private=False)]}))
        key = ECKey.generate_key("P-384", parameters={"kid": "k"}, private=True)
        client_id = access.clients.add(name="bench", scopes=["system/Task.rs"],
                                       jwks={"keys": [key.as_dict(private=False)]}).client_id
        client = create_app(services).test_client()

        def token_request() -> Any:
            answer = client.post("/auth/token", data={
                "grant_type": "client_credentials", "scope": "system/Task.rs",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": build_assertion(key, "k", "ES384", client_id=client_id,
                                                    token_url=BASE + "/auth/token")})
            assert answer.status_code == 200, answer.get_json()
            return answer.get_json()["access_token"]

        local = {"Authorization": f"Bearer {token_request()}"}
        now = int(time.time())
        external = {"Authorization": "Bearer " + jwt.encode(
            {"alg": "RS256", "kid": "as-1"},
            {"iss": "https://as.bench", "aud": BASE + "/fhir", "exp": now + 3600,
             "sub": "u", "scope": "user/Task.rs"}, issuer_key, algorithms=["RS256"])}
        counter = iter(range(10**9))

        def read(headers: dict[str, str]) -> Callable[[], None]:
            def call() -> None:
                answer = client.get(f"/fhir/Task/{ids[next(counter) % REFERRALS]}",
                                    headers=headers)
                assert answer.status_code == 200
            return call

        def search() -> None:
            answer = client.get(f"/fhir/Task?_count=20&patient=Patient/{next(counter) % 300}",
                                headers=local)
            assert answer.status_code == 200

        def concurrent_reads() -> float:
            """8 clients at once: their AuditEvents share commits (group commit)."""
            app = client.application
            done = [0] * 8
            stop = time.perf_counter() + seconds

            def loop(slot: int) -> None:
                own = app.test_client()
                while time.perf_counter() < stop:
                    answer = own.get(f"/fhir/Task/{ids[(slot * 7919 + done[slot]) % REFERRALS]}",
                                     headers=local)
                    assert answer.status_code == 200
                    done[slot] += 1

            threads = [threading.Thread(target=loop, args=(n,)) for n in range(8)]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return sum(done) / (time.perf_counter() - started)

        baseline = rate(lambda: client.get("/healthz"), seconds)
        figures = {"read_local_token": rate(read(local), seconds),
                   "read_tenant_jwt": rate(read(external), seconds),
                   "search_local_token": rate(search, seconds),
                   "read_local_token_8_clients": concurrent_reads(),
                   "token_requests": rate(token_request, seconds)}
        print(f"{kind}_healthz_baseline: {baseline:.0f} requests/s")
        for name, value in figures.items():
            print(f"{kind}_{name}: {value:.0f} requests/s (ratio to baseline "
                  f"{value / baseline:.3f})")
        services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", default="sqlite")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    for kind in args.databases.split(","):
        run(kind, args.seconds)


if __name__ == "__main__":
    main()
