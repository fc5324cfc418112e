"""Worklist page render time at 100,000 and 1,000,000 referrals, SQLite and PostgreSQL.

A synthetic store is bulk-loaded with executemany inserts (not through the lifecycle, to keep
set-up short): referrals from three origins (FHIR EHR, demo, HL7 v2 sender, as their source
keys say) and the Patient resources of nine patients in ten at their origin. Then the real
worklist page (Flask handler: session lookup, keyset query, one query for the page's patient
names, AuditEvent write, template) is requested through the Flask test client with a mix of filters,
sorts and second pages. Baseline, same data, same run: a bare indexed count query
(`SELECT count(*) FROM referrals WHERE stage = 'outreach'`).

The same pages are also requested, in alternating rounds, by launches of two tenants limited to
an organisation's referral sources (`access_tenant`): `ehr` (the FHIR EHR's, a third of the
referrals) and `sender0` (one HL7 v2 sender's, about one in twelve), with their ratio to the
unlimited launch's page in the same run.

    .venv/bin/python bench/worklist.py --sizes 100000,1000000 --databases sqlite,postgresql

PostgreSQL comes from REFLOOP_TEST_POSTGRES_URL (a scratch database is created and dropped).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scratch import scratch_postgres

from referrals.model import Stage
from referrals.store import connect
from referrals.store.migrate import upgrade
from referrals.store.schema import referrals, resources
from referrals.worklist import WorklistFilter, fetch_page, fetch_patients
from refloop.app import create_app
from refloop.services import build_services
from refloop.settings import Settings
from smart_app.context import LaunchContext

OPEN = [Stage.DETECTED, Stage.TRIAGE, Stage.ACCEPTED, Stage.AUTH_PENDING, Stage.OUTREACH,
        Stage.SCHEDULED, Stage.NO_SHOW, Stage.ON_HOLD]
CLOSED = [Stage.LOOP_CLOSED, Stage.DECLINED, Stage.CANCELLED, Stage.FAILED]
SPECIALTIES = ["cardiology", "dermatology", "orthopedics", "neurology", "oncology",
               "gastroenterology", "endocrinology", "pulmonology"]
PRIORITIES = ["routine"] * 6 + ["urgent"] * 3 + ["asap", "stat"]
OWNERS = ["", "Practitioner/bench"] + [f"PractitionerRole/c{i}" for i in range(20)]
QUERIES = ["", "owner=me", "priority=urgent", "specialty=cardiology", "overdue=1",
           "sort=oldest", "stage=outreach", "sort=updated", "owner=unassigned&priority=stat"]
CHUNK = 20_000
EHR = "https://ehr.example/fhir"
GIVEN = ["Ada", "Grace", "Alan", "Katherine", "Edsger", "Barbara", "Donald", "Frances"]
FAMILY = ["Lovelace", "Hopper", "Turing", "Johnson", "Dijkstra", "Liskov", "Knuth", "Allen"]


def origin(k: int, i: int) -> tuple[str, str]:
    """(source key of referral i, server of its resources) for patient k: EHR, demo or HL7."""
    if k % 3 == 0:
        return f"fhir|{EHR}|ServiceRequest/b{i}", EHR
    if k % 3 == 1:
        return f"demo|ServiceRequest/b{i}", "demo"
    return f"hl7|SENDER{k % 4}|ORD-{i}", f"hl7:SENDER{k % 4}"


def synthetic_patients(n: int, seed: int = 11) -> Iterator[list[dict[str, Any]]]:
    """Patient resources for nine patients in ten (the rest show their reference)."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    chunk: list[dict[str, Any]] = []
    for k in range(n):
        if k % 10 == 9:
            continue
        body = {"resourceType": "Patient", "id": f"b{k}",
                "name": [{"use": "official", "given": [rng.choice(GIVEN)],
                          "family": rng.choice(FAMILY)}],
                "gender": rng.choice(["female", "male", "other", "unknown"]),
                "birthDate": f"{rng.randrange(1930, 2020)}-{rng.randrange(1, 13):02d}-"
                             f"{rng.randrange(1, 29):02d}"}
        chunk.append({"server": origin(k, 0)[1], "resource_type": "Patient",
                      "resource_id": f"b{k}", "version": 1, "remote_version": None,
                      "deleted": False, "updated_at": now, "body": body})
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def synthetic_rows(n: int, seed: int = 7) -> Iterator[list[dict[str, Any]]]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    chunk: list[dict[str, Any]] = []
    for i in range(n):
        stage = rng.choice(OPEN) if rng.random() < 0.55 else rng.choice(CLOSED)
        created = now - timedelta(minutes=rng.randrange(0, 60 * 24 * 400))
        updated = created + timedelta(minutes=rng.randrange(0, 60 * 24 * 20))
        deadline = None if stage in CLOSED or stage == Stage.ON_HOLD else \
            updated + timedelta(hours=rng.choice([1, 4, 24, 72, 240]))
        rid = str(uuid.UUID(int=rng.getrandbits(128)))
        k = rng.randrange(n)
        row = {"id": rid, "source_key": origin(k, i)[0], "stage": stage.value,
               "task_status": "in-progress", "business_status": "3.0",
               "priority": rng.choice(PRIORITIES), "patient": f"Patient/b{k}",
               "owner": rng.choice(OWNERS), "service_request": f"ServiceRequest/b{i}",
               "specialty": rng.choice(SPECIALTIES), "payer": f"Payer {rng.randrange(30)}",
               "auth_state": rng.choice(["", "", "requested", "approved", "denied"]),
               "deadline": deadline, "created_at": created, "updated_at": updated,
               "version": rng.randrange(1, 9),
               "state": {"id": rid, "stage": stage.value, "reason_text": "bench referral"},
               "task": {"resourceType": "Task", "id": rid, "status": "in-progress"}}
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@contextmanager
def scratch_database(kind: str, workdir: Path, size: int) -> Iterator[str]:
    if kind == "sqlite":
        path = workdir / f"worklist-{size}.db"
        yield f"sqlite:///{path}"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    base = os.environ.get("REFLOOP_TEST_POSTGRES_URL", "")
    if not base:
        raise SystemExit("postgresql: set REFLOOP_TEST_POSTGRES_URL (or use --databases sqlite)")
    with scratch_postgres(base, f"bench_worklist_{size}") as url:
        yield url


def load(url: str, size: int) -> float:
    db = connect(url)
    upgrade(db)
    started = time.perf_counter()
    with click.progressbar(length=size, label=f"  loading {size:,} referrals",
                           file=sys.stderr) as bar:
        for chunk in synthetic_rows(size):
            with db.write() as c:
                c.execute(referrals.insert(), chunk)
            bar.update(len(chunk))
    with click.progressbar(length=size - size // 10, label=f"  loading {size - size // 10:,} "
                           "patients", file=sys.stderr) as bar:
        for chunk in synthetic_patients(size):
            with db.write() as c:
                c.execute(resources.insert(), chunk)
            bar.update(len(chunk))
    with db.write() as c:
        c.execute(sa.text("ANALYZE"))
    db.dispose()
    return time.perf_counter() - started


#: the limited launches measured beside the unlimited one: tenant -> its referral sources
TENANTS = {"ehr": [f"fhir|{EHR}"], "sender0": ["hl7|SENDER0"]}


def bench_settings(workdir: Path, url: str) -> Settings:
    tenants = [{"name": name, "iss": f"https://{name}.example/fhir", "client_id": name,
                "client_secret": "unused", "ehr_origins": [f"https://{name}.example"],
                **({"access_tenant": name} if name in TENANTS else {})}
               for name in ("bench", *TENANTS)]
    return Settings(var_dir=workdir / "var", database_url=url, sections={
        "smart": {"tenants": tenants},
        "access": {"tenants": [{"name": n, "sources": s} for n, s in TENANTS.items()]}})


def measure(url: str, workdir: Path, samples: int) -> dict[str, float]:
    services = build_services(bench_settings(workdir, url))
    runtime = services.adapters["smart"]
    client = create_app(services).test_client()
    client.set_cookie("refloop_smart", "bench-browser", domain="localhost", path="/smart")
    pages_of = {name: "/smart/s/" + runtime.sessions.create(
        "bench-browser", tenant=name, iss=f"https://{name}.example/fhir",
        context=LaunchContext(user="Practitioner/bench"), tokens={},
        token_expires_at=None).id + "/" for name in ("bench", *TENANTS)}
    for page in pages_of.values():
        for query in QUERIES:  # warm caches and plans
            assert client.get(f"{page}?{query}").status_code == 200
    first = client.get(pages_of["bench"]).get_data(as_text=True)
    assert any(name in first for name in FAMILY), "the page shows no patient names"
    times: dict[str, list[float]] = {name: [] for name in pages_of}
    counts = []
    count_sql = sa.select(sa.func.count()).select_from(referrals).where(
        referrals.c.stage == "outreach")
    order = list(pages_of)
    for i in range(samples):
        for name in order[i % len(order):] + order[:i % len(order)]:  # alternate who goes first
            times[name].append(_page_time(client, pages_of[name], QUERIES[i % len(QUERIES)],
                                          next_page=i % 3 == 2))
        started = time.perf_counter()
        with services.db.read() as c:
            c.execute(count_sql).scalar_one()
        counts.append(time.perf_counter() - started)
    pages = times["bench"]
    rows = fetch_page(services.db, WorklistFilter()).rows
    names = []
    for _ in range(samples):  # the page's patient names alone (one primary-key query)
        started = time.perf_counter()
        fetch_patients(services.db, rows)
        names.append(time.perf_counter() - started)
    services.close()
    return {"names_p50": _pct(names, 50), "names_p95": _pct(names, 95),
            "page_p50": _pct(pages, 50), "page_p95": _pct(pages, 95),
            "count_p50": _pct(counts, 50), "count_p95": _pct(counts, 95),
            **{f"{name}_p{q}": _pct(times[name], q) for name in TENANTS for q in (50, 95)}}


def _page_time(client: Any, page: str, query: str, *, next_page: bool) -> float:
    """Seconds for one worklist page (and, with `next_page`, the next one by its cursor)."""
    started = time.perf_counter()
    response = client.get(f"{page}?{query}")
    body = response.get_data(as_text=True)
    if next_page and 'rel="next"' in body:
        link = body.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0]
        response = client.get(page + link.replace("&amp;", "&"))
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.status_code
    return elapsed


def _pct(values: list[float], pct: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--samples", type=int, default=90)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    ratios = []
    with tempfile.TemporaryDirectory(prefix="refloop-bench-") as tmp:
        workdir = Path(tmp)
        for kind in args.databases.split(","):
            for size in sizes:
                print(f"# {kind}, {size:,} referrals", file=sys.stderr, flush=True)
                with scratch_database(kind, workdir, size) as url:
                    seconds = load(url, size)
                    print(f"{kind}_{size}_load: {seconds:.1f} s", flush=True)
                    result = measure(url, workdir, args.samples)
                tag = f"{kind}_{size}"
                print(f"{tag}_page_p50: {result['page_p50']:.2f} ms")
                print(f"{tag}_page_p95: {result['page_p95']:.2f} ms")
                print(f"{tag}_patient_names_query_p50: {result['names_p50']:.2f} ms")
                print(f"{tag}_patient_names_query_p95: {result['names_p95']:.2f} ms")
                print(f"{tag}_count_baseline_p50: {result['count_p50']:.2f} ms")
                print(f"{tag}_count_baseline_p95: {result['count_p95']:.2f} ms")
                for name in TENANTS:
                    print(f"{tag}_tenant_{name}_page_p50: {result[f'{name}_p50']:.2f} ms")
                    print(f"{tag}_tenant_{name}_page_p95: {result[f'{name}_p95']:.2f} ms")
                    print(f"{tag}_tenant_{name}_vs_unlimited_page_p50_ratio: "
                          f"{result[f'{name}_p50'] / max(result['page_p50'], 1e-6):.2f} x")
                ratio = result["page_p50"] / max(result["count_p50"], 1e-6)
                ratios.append(ratio)
                print(f"{tag}_page_vs_count_p50_ratio: {ratio:.2f} x", flush=True)
    print(f"page_vs_count_p50_ratio_max: {max(ratios):.2f} x")


if __name__ == "__main__":
    main()
