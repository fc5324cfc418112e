"""Outcomes dashboard and monthly report at 1,000,000 referrals with their events, SQLite and
PostgreSQL.

A synthetic store is bulk-loaded (not through the lifecycle, to keep set-up short, but every
referral follows a path the lifecycle table allows: detected, withdrawn, declined, accepted,
authorization, outreach, failures, bookings, no-shows, visits, consult notes, receipts; two years
of referrals, the recent ones still open). Then:

- the rollups are rebuilt from the event log (`refloop analytics rebuild`), and the incremental
  rollup re-reads the newest events (events per second);
- the SMART app's Dashboard page (session, rollup refresh, figures, template) is requested through
  the Flask test client with a mix of views: default, weekly, one filter of each dimension, two
  filters (counted from the facts), other breakdowns;
- the monthly report (figures by dimension, CMS50-shaped loop closure, MeasureReport) of the last
  complete month.

Baseline, same data, same run, alternating with the measured requests: a bare
`SELECT count(*) FROM referral_events`.

The same views are also requested, alternating with the unlimited launch's, by a launch of a
tenant limited to an organisation's referral sources (`access_tenant`) that holds every
referral of the store: the worst case, counted from the facts instead of the cube.

    .venv/bin/python bench/outcomes.py --size 1000000 --databases sqlite,postgresql

PostgreSQL comes from REFLOOP_TEST_POSTGRES_URL (a scratch database is created and dropped).
"""

from __future__ import annotations

import argparse
import json
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

from analytics.measure_report import build_measure_report
from analytics.report import parse_period, period_report
from analytics.rollup import CURSOR, Position, Rollup
from referrals.model import Stage
from referrals.store import connect
from referrals.store.migrate import upgrade
from referrals.store.schema import cursors, referral_events, referrals
from referrals.task import STAGE_MAP
from refloop.app import create_app
from refloop.services import build_services
from refloop.settings import Settings
from smart_app.context import LaunchContext

SPECIALTIES = ["cardiology", "dermatology", "orthopedics", "neurology", "oncology",
               "gastroenterology", "endocrinology", "pulmonology", "urology", "rheumatology"]
PRIORITIES = ["routine"] * 6 + ["urgent"] * 3 + ["asap", "stat"]
REFERRERS = 400
PAYERS = 30
CHUNK = 10_000
DAYS = 730
QUERIES = ["", "grain=week", "specialty=cardiology", "referrer=Practitioner/gp-7",
           "priority=urgent", "payer=Payer+3&by=specialty", "destination=Organization/"
           "neurology-2", "specialty=cardiology&priority=routine", "by=payer",
           "grain=week&specialty=oncology&by=destination"]
LISTENER = "Device/refloop-subscriptions"
OUTREACH = "Device/refloop-outreach"
CALENDAR = "Device/refloop-scheduling"
LOOP = "Device/refloop-loop"
PAS = "Device/refloop-pas"
TERMINAL = {Stage.DECLINED, Stage.CANCELLED, Stage.LOOP_CLOSED, Stage.FAILED}


def life(rng: random.Random, at: datetime) -> list[tuple[str, str, str, datetime, str, dict]]:
    """(action, stage after, actor, at, reason code, data) of one referral, in order: a path
    the lifecycle table allows."""
    coordinator = f"PractitionerRole/c{rng.randrange(25)}"
    steps: list[tuple[str, str, str, datetime, str, dict]] = [
        ("detect", "detected", LISTENER, at, "", {})]
    t = at + timedelta(minutes=rng.randrange(10, 60 * 30))

    def add(action: str, stage: str, actor: str, reason: str = "", **data: Any) -> None:
        steps.append((action, stage, actor, t, reason, data))

    if rng.random() < 0.05:
        add("cancel", "cancelled", coordinator, "referrer-cancelled")
        return steps
    if rng.random() < 0.08:
        add("triage", "triage", coordinator)
        t += timedelta(hours=rng.randrange(1, 48))
        add("decline", "declined", coordinator,
            rng.choice(["not-covered", "wrong-specialty", "incomplete", "not-indicated"]))
        return steps
    add("accept", "accepted", coordinator)
    if rng.random() < 0.25:
        t += timedelta(hours=rng.randrange(1, 12))
        add("request-authorization", "auth-pending", PAS, auth_state="submitted")
        t += timedelta(hours=rng.randrange(4, 24 * 9))
        if rng.random() < 0.1:
            add("hold", "on-hold", PAS, "auth-denied", auth_state="denied")
            return steps
        add("authorize", "outreach", PAS, auth_state="approved")
    else:
        t += timedelta(minutes=rng.randrange(1, 600))
        add("start-outreach", "outreach", OUTREACH)
    add("record-outreach", "outreach", OUTREACH, "sms-sent")
    if rng.random() < 0.12:
        t += timedelta(days=21)
        add("fail", "failed", OUTREACH, "unreachable")
        return steps
    t += timedelta(hours=rng.randrange(1, 24 * 12))
    add("schedule", "scheduled", rng.choice(["Patient", coordinator]))
    while rng.random() < 0.18:
        t += timedelta(days=rng.randrange(5, 30))
        add("no-show", "no-show", CALENDAR, "no-check-in")
        t += timedelta(days=rng.randrange(1, 6))
        add("schedule", "scheduled", coordinator)
    t += timedelta(days=rng.randrange(3, 45))
    add("complete-visit", "visit-completed", CALENDAR)
    if rng.random() < 0.6:
        t += timedelta(days=rng.randrange(1, 20))
        add("close-loop", "loop-closed", LOOP, add_outputs=[{
            "type": "DocumentReference", "reference": f"DocumentReference/n{rng.getrandbits(40)}",
            "display": "consult note"}])
        if rng.random() < 0.7:
            t += timedelta(hours=rng.randrange(1, 72))
            add("record-receipt", "loop-closed", LOOP)
    return steps


def synthetic(size: int, now: datetime, seed: int = 20261204
              ) -> Iterator[tuple[list[dict[str, Any]], list[tuple[Any, ...]]]]:
    """Chunks of (referral rows, event rows)."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    events: list[tuple[Any, ...]] = []
    for i in range(size):
        detected = now - timedelta(minutes=rng.randrange(0, DAYS * 24 * 60))
        path = [s for s in life(rng, detected) if s[3] <= now]
        rid = str(uuid.UUID(int=rng.getrandbits(128)))
        specialty = rng.choice(SPECIALTIES)
        stage = Stage(path[-1][1])
        previous: str | None = None
        for seq, (action, to_stage, actor, at, reason, data) in enumerate(path, start=1):
            events.append((rid, seq, action, previous, to_stage, actor, at, reason or None,
                           json.dumps(data)))
            previous = to_stage
        last = path[-1][3]
        deadline = None if stage in TERMINAL or stage == Stage.ON_HOLD else \
            last + timedelta(hours=rng.choice([24, 72, 240, 720]))
        status, bser = STAGE_MAP[stage]
        referrer = f"Practitioner/gp-{min(int(rng.paretovariate(1.1)), REFERRERS)}"
        state = {"id": rid, "source_key": f"fhir|https://ehr.example/fhir|ServiceRequest/b{i}",
                 "service_request": f"ServiceRequest/b{i}",
                 "patient": f"Patient/p{rng.randrange(size)}",
                 "stage": stage.value, "requester": referrer,
                 "performer": f"Organization/{specialty}-{rng.randrange(1, 4)}",
                 "priority": rng.choice(PRIORITIES), "specialty": specialty,
                 "payer": f"Payer {rng.randrange(PAYERS)}",
                 "deadline": deadline.isoformat() if deadline else None,
                 "status_reason": {"code": path[-1][4], "text": ""} if path[-1][4] else None,
                 "created_at": detected.isoformat(), "updated_at": last.isoformat(),
                 "version": len(path)}
        rows.append({"id": rid, "source_key": state["source_key"], "stage": stage.value,
                     "task_status": status, "business_status": bser[0] if bser else None,
                     "priority": state["priority"], "patient": state["patient"], "owner": "",
                     "service_request": state["service_request"], "specialty": specialty,
                     "payer": state["payer"], "auth_state": "", "deadline": deadline,
                     "created_at": detected, "updated_at": last, "version": len(path),
                     "state": state, "task": {"resourceType": "Task", "id": rid}})
        if len(rows) == CHUNK:
            yield rows, events
            rows, events = [], []
    if rows:
        yield rows, events


EVENT_COLUMNS = ("referral_id", "seq", "action", "from_stage", "to_stage", "actor", "at",
                 "reason_code", "data")


def load(url: str, size: int, now: datetime) -> tuple[float, int]:
    db = connect(url)
    upgrade(db)
    started = time.perf_counter()
    count = 0
    with click.progressbar(length=size, label=f"  loading {size:,} referrals and their events",
                           file=sys.stderr) as bar:
        for rows, events in synthetic(size, now):
            count += len(events)
            if db.dialect == "postgresql":
                _copy(db, rows, events)
            else:
                _sqlite_insert(db, rows, events)
            bar.update(len(rows))
    with db.write() as c:
        c.execute(sa.text("ANALYZE"))
    db.dispose()
    return time.perf_counter() - started, count


def _sqlite_insert(db: Any, rows: list[dict[str, Any]], events: list[tuple[Any, ...]]) -> None:
    """SQLite: the driver's executemany with values already in their stored form."""
    columns = list(rows[0])
    raw = db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        cursor.executemany(
            f"INSERT INTO referrals ({', '.join(columns)}) VALUES "
            f"({', '.join('?' for _ in columns)})",
            [[json.dumps(row[k]) if k in ("state", "task") else _stored(row[k])
              for k in columns] for row in rows])
        cursor.executemany(
            f"INSERT INTO referral_events ({', '.join(EVENT_COLUMNS)}, provenance, "
            "actor_display, source, source_message) VALUES "
            f"({', '.join('?' for _ in EVENT_COLUMNS)}, '{{}}', '', '', '')",
            [[_stored(v) for v in event] for event in events])
        raw.commit()
    finally:
        raw.close()


def _stored(value: Any) -> Any:
    """A value as SQLAlchemy's SQLite dialect stores it (datetimes as UTC text)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def _copy(db: Any, rows: list[dict[str, Any]], events: list[tuple[Any, ...]]) -> None:
    """PostgreSQL COPY: the fastest bulk load."""
    columns = list(rows[0])
    raw = db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        with cursor.copy(f"COPY referrals ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([json.dumps(row[k]) if k in ("state", "task") else row[k]
                                for k in columns])
        with cursor.copy(f"COPY referral_events ({', '.join(EVENT_COLUMNS)}, provenance) "
                         "FROM STDIN") as copy:
            for event in events:
                copy.write_row([*event, "{}"])
        raw.commit()
    finally:
        raw.close()


@contextmanager
def scratch_database(kind: str, workdir: Path, size: int, keep: bool) -> Iterator[str]:
    """A new store of `kind`, removed afterwards unless `keep` (its URL is then printed, for
    `--reuse`)."""
    if kind == "sqlite":
        path = workdir / f"analytics-{size}-{uuid.uuid4().hex[:8]}.db"
        yield f"sqlite:///{path}"
        if keep:
            print(f"  kept: sqlite:///{path}", file=sys.stderr)
            return
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    base = os.environ.get("REFLOOP_TEST_POSTGRES_URL", "")
    if not base:
        raise SystemExit("postgresql: set REFLOOP_TEST_POSTGRES_URL (or use --databases sqlite)")
    with scratch_postgres(base, f"bench_analytics_{size}", keep=keep) as url:
        yield url
        if keep:
            print(f"  kept: {url}", file=sys.stderr)


def measure(url: str, workdir: Path, samples: int, report_samples: int, now: datetime,
            rebuild: bool = True) -> dict[str, float]:
    tenants = [{"name": name, "iss": f"https://{name}.example/fhir", "client_id": name,
                "client_secret": "unused", "ehr_origins": [f"https://{name}.example"],
                **({"access_tenant": "org"} if name == "org" else {})}
               for name in ("bench", "org")]
    settings = Settings(var_dir=workdir / "var", database_url=url, sections={
        "smart": {"tenants": tenants},
        "access": {"tenants": [{"name": "org", "sources": ["fhir|https://ehr.example/fhir"]}]}})
    services = build_services(settings)
    rollup: Rollup = services.adapters["analytics"].rollup
    result: dict[str, float] = {}
    if rebuild:
        result.update(_rebuild(services, rollup))
    runtime = services.adapters["smart"]
    page, limited = (_dashboard(runtime, name) for name in ("bench", "org"))
    client = create_app(services).test_client()
    client.set_cookie("refloop_smart", "bench-browser", domain="localhost", path="/smart")
    for query in QUERIES:  # warm caches and plans
        answer = client.get(f"{page}?{query}")
        assert answer.status_code == 200, (query, answer.status_code)
    assert "detected:" in client.get(page).get_data(as_text=True)
    pages, tenant_pages, counts = [], [], []
    count_sql = sa.select(sa.func.count()).select_from(referral_events)
    for i in range(samples):
        query = QUERIES[i % len(QUERIES)]
        for url_of, times in ((page, pages), (limited, tenant_pages))[::1 if i % 2 else -1]:
            started = time.perf_counter()
            assert client.get(f"{url_of}?{query}").status_code == 200
            times.append(time.perf_counter() - started)
        started = time.perf_counter()
        with services.db.read() as c:
            c.execute(count_sql).scalar_one()
        counts.append(time.perf_counter() - started)
    month = (now.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    reports = []
    for _ in range(report_samples):
        started = time.perf_counter()
        build_measure_report(period_report(services.db, parse_period(month), now=now))
        reports.append(time.perf_counter() - started)
    services.close()
    result.update(page_p50=_pct(pages, 50), page_p95=_pct(pages, 95),
                  tenant_p50=_pct(tenant_pages, 50), tenant_p95=_pct(tenant_pages, 95),
                  count_p50=_pct(counts, 50), count_p95=_pct(counts, 95),
                  report_p50=_pct(reports, 50), report_p95=_pct(reports, 95))
    return result


def _dashboard(runtime: Any, tenant: str) -> str:
    """The dashboard's path in a new session of a launch from `tenant`."""
    session = runtime.sessions.create("bench-browser", tenant=tenant,
                                      iss=f"https://{tenant}.example/fhir",
                                      context=LaunchContext(user="Practitioner/bench"),
                                      tokens={}, token_expires_at=None)
    return f"/smart/s/{session.id}/dashboard"


def _rebuild(services: Any, rollup: Rollup) -> dict[str, float]:
    started = time.perf_counter()
    with click.progressbar(length=_count(services, referrals), label="  rebuilding the rollups",
                           file=sys.stderr) as bar:
        referral_count = rollup.rebuild(progress=bar.update)
    seconds = time.perf_counter() - started
    with services.db.write() as c:
        c.execute(sa.text("ANALYZE"))
    return {"rebuild_s": seconds, "rebuild_per_s": referral_count / seconds,
            **_incremental(services, rollup)}


def _incremental(services: Any, rollup: Rollup, events: int = 20_000) -> dict[str, float]:
    """The incremental rollup re-reading the newest `events` events (recomputing their
    referrals from their whole histories and moving the cube by the difference)."""
    position = rollup.position()
    back = max(0, position.below - events)
    with services.db.write() as c:
        c.execute(cursors.update().where(cursors.c.name == CURSOR).values(
            value=Position(back, back, {}).dump()))
    started = time.perf_counter()
    read = rollup.catch_up(rounds=10_000)
    seconds = time.perf_counter() - started
    return {"incremental_events": float(read), "incremental_per_s": read / seconds}


def _count(services: Any, table: sa.Table) -> int:
    with services.db.read() as c:
        return int(c.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def _pct(values: list[float], pct: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--report-samples", type=int, default=8)
    parser.add_argument("--keep", action="store_true",
                        help="keep the loaded stores (their URLs are printed) for --reuse")
    parser.add_argument("--reuse", metavar="URL", action="append", default=[],
                        help="measure a store kept by --keep instead of loading one "
                        "(repeatable; --size must be the size it was loaded with)")
    parser.add_argument("--skip-rebuild", action="store_true",
                        help="with --reuse: keep the store's rollups instead of rebuilding them")
    parser.add_argument("--load-only", action="store_true",
                        help="with --keep: load the stores and stop")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where SQLite stores are written (default: a temporary directory)")
    args = parser.parse_args()
    now = datetime.now(UTC)
    ratios = []
    with tempfile.TemporaryDirectory(prefix="refloop-bench-") as tmp:
        workdir = Path(tmp)
        stores = args.data_dir or workdir
        for kind, url in _targets(args):
            print(f"# {kind}, {args.size:,} referrals", file=sys.stderr, flush=True)
            tag = f"{kind}_{args.size}"
            with _store(kind, url, stores, args) as target:
                if url is None:
                    seconds, events = load(target, args.size, now)
                    print(f"{tag}_load: {seconds:.1f} s ({events:,} events)", flush=True)
                if args.load_only:
                    continue
                r = measure(target, workdir, args.samples, args.report_samples, now,
                            rebuild=not (url and args.skip_rebuild))
            ratios.append(_print(tag, r))
    if ratios:
        print(f"dashboard_vs_count_p95_ratio_max: {max(ratios):.2f} x")


def _targets(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    if args.reuse:
        return [("postgresql" if u.startswith("postgresql") else "sqlite", u)
                for u in args.reuse]
    return [(kind, None) for kind in args.databases.split(",")]


@contextmanager
def _store(kind: str, url: str | None, stores: Path, args: argparse.Namespace
           ) -> Iterator[str]:
    if url is not None:
        db = connect(url)
        upgrade(db)  # a store kept by an older version of the code
        db.dispose()
        yield url
        return
    with scratch_database(kind, stores, args.size, args.keep) as target:
        yield target


def _print(tag: str, r: dict[str, float]) -> float:
    if "rebuild_s" in r:
        print(f"{tag}_rollup_rebuild: {r['rebuild_s']:.1f} s "
              f"({r['rebuild_per_s']:.0f} referrals/s)")
        print(f"{tag}_rollup_incremental: {r['incremental_per_s']:.0f} events/s "
              f"({r['incremental_events']:.0f} events)")
    print(f"{tag}_dashboard_p50: {r['page_p50']:.1f} ms")
    print(f"{tag}_dashboard_p95: {r['page_p95']:.1f} ms")
    print(f"{tag}_tenant_dashboard_p50: {r['tenant_p50']:.1f} ms")
    print(f"{tag}_tenant_dashboard_p95: {r['tenant_p95']:.1f} ms")
    print(f"{tag}_tenant_vs_unlimited_dashboard_p50_ratio: "
          f"{r['tenant_p50'] / max(r['page_p50'], 1e-6):.2f} x")
    print(f"{tag}_monthly_report_p50: {r['report_p50']:.1f} ms")
    print(f"{tag}_monthly_report_p95: {r['report_p95']:.1f} ms")
    print(f"{tag}_count_events_baseline_p50: {r['count_p50']:.1f} ms")
    print(f"{tag}_count_events_baseline_p95: {r['count_p95']:.1f} ms")
    ratio = r["page_p95"] / max(r["count_p95"], 1e-6)
    print(f"{tag}_dashboard_vs_count_p95_ratio: {ratio:.2f} x")
    print(f"{tag}_report_vs_count_p50_ratio: "
          f"{r['report_p50'] / max(r['count_p50'], 1e-6):.2f} x", flush=True)
    return ratio


if __name__ == "__main__":
    main()
