"""Store benchmark: referrals opened and lifecycle transitions committed per second, and work
items claimed and completed per second by 4 concurrent worker processes, on SQLite and on
PostgreSQL.

Each figure is set against a baseline measured in the same run on the same database: bare
single-row INSERT transactions (from one process for opens and transitions, from the same number of
processes for the work queue). Prints `metric: value unit` lines and the ratios.

    python bench/store.py [--referrals 200] [--items 1200] [--workers 4]

PostgreSQL runs when REFLOOP_BENCH_POSTGRES_URL or REFLOOP_TEST_POSTGRES_URL is set (a scratch
database is created and dropped); otherwise the run says it skipped it.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sqlalchemy as sa
from scratch import scratch_postgres

from referrals.model import Command, Referral, new_referral_id
from referrals.service import ReferralService
from referrals.store import Database, connect
from referrals.store.migrate import upgrade
from referrals.store.quarantine import Quarantine
from referrals.store.referrals import ReferralStore
from referrals.store.work import WorkItem, WorkQueue
from referrals.worker import Worker
from refloop.settings import Settings

#: SQLite durability as `refloop serve` runs it (override: REFLOOP_BENCH_SQLITE_SYNCHRONOUS)
SYNCHRONOUS = os.environ.get("REFLOOP_BENCH_SQLITE_SYNCHRONOUS") or Settings().sqlite_synchronous

PATH = ["triage", "accept", "schedule", "complete-visit", "close-loop"]
BASELINE = sa.table("bench_baseline", sa.column("worker", sa.Integer),
                    sa.column("payload", sa.Text))


def report(metric: str, value: float, unit: str) -> None:
    print(f"{metric}: {value:.2f} {unit}", flush=True)


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextmanager
def scratch_databases(pg_url: str | None) -> Iterator[list[tuple[str, str]]]:
    """(name, url) of a fresh, migrated SQLite file and, when configured, PostgreSQL database."""
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="refloop-bench-"))
        made = [("sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}")]
        if pg_url:
            made.append(("postgresql",
                         stack.enter_context(scratch_postgres(pg_url, "refloop_bench"))))
        for _name, url in made:
            db = connect(url, sqlite_synchronous=SYNCHRONOUS)
            upgrade(db)
            with db.write() as conn:
                conn.execute(sa.text("CREATE TABLE bench_baseline (worker INTEGER NOT NULL, "
                                     "payload TEXT NOT NULL)"))
            db.dispose()
        yield made


def bare_inserts(db: Database, count: int, worker: int = 0) -> None:
    for n in range(count):
        with db.write() as conn:
            conn.execute(BASELINE.insert().values(worker=worker, payload=f"row {n}"))


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def bench_transitions(db: Database, referrals: int) -> tuple[float, float]:
    """(referrals opened per second, transitions per second) through ReferralService.open
    (one conditional insert and its first event) and .act (load, transition, save, event)."""
    service = ReferralService(db, ReferralStore(db))
    ids: list[str] = []

    def open_all() -> None:
        for n in range(referrals):
            draft = Referral(id=new_referral_id(), source_key=f"bench|{n}",
                             service_request=f"ServiceRequest/{n}", patient=f"Patient/{n}")
            referral, created = service.open(draft, Command("detect"))
            if not created:
                raise SystemExit(f"bench|{n} was not created")
            ids.append(referral.id)

    def run() -> None:
        for action in PATH:
            for referral_id in ids:
                service.act(referral_id, Command(action))

    opens = referrals / timed(open_all)
    return opens, referrals * len(PATH) / timed(run)


def _process(url: str, mode: str, count: int, worker: int, ready: Any, go: Any,
             done: Any) -> None:
    db = connect(url, sqlite_synchronous=SYNCHRONOUS)
    queue = WorkQueue(db, Quarantine(db))
    ready.put(worker)
    go.wait()
    if mode == "insert":
        bare_inserts(db, count, worker)
        processed = count
    else:
        def noop(_item: WorkItem) -> None:
            return None

        processed = Worker(queue, {"bench.noop": noop}, batch=10).drain()
    done.put(processed)
    db.dispose()


def in_processes(url: str, mode: str, total: int, workers: int) -> tuple[float, int]:
    """Run `mode` in `workers` processes started together; (seconds, items processed)."""
    ctx = mp.get_context("spawn")
    ready, done, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    share = total // workers
    procs = [ctx.Process(target=_process, args=(url, mode, share, n, ready, go, done))
             for n in range(workers)]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=120)
    started = time.perf_counter()
    go.set()
    processed = sum(done.get(timeout=600) for _ in procs)
    elapsed = time.perf_counter() - started
    for proc in procs:
        proc.join(timeout=60)
        if proc.exitcode != 0:
            raise SystemExit(f"a {mode} process failed (exit {proc.exitcode})")
    return elapsed, processed


def bench_database(name: str, url: str, args: argparse.Namespace) -> None:
    db = connect(url, sqlite_synchronous=SYNCHRONOUS)
    if name == "sqlite":
        print(f"# sqlite synchronous={SYNCHRONOUS} (WAL)", flush=True)
    note(f"[{name}] bare inserts, then {args.referrals * len(PATH)} lifecycle transitions ...")
    inserts = args.referrals * len(PATH)
    baseline = inserts / timed(lambda: bare_inserts(db, inserts))
    opens, transitions = bench_transitions(db, args.referrals)
    report(f"{name}.bare_insert_commits", baseline, "rows/s")
    report(f"{name}.referrals_opened", opens, "referrals/s")
    report(f"{name}.opens_vs_bare_insert", opens / baseline, "ratio")
    report(f"{name}.lifecycle_transitions", transitions, "transitions/s")
    report(f"{name}.transitions_vs_bare_insert", transitions / baseline, "ratio")

    queue = WorkQueue(db, Quarantine(db))
    for n in range(args.items):
        queue.enqueue("bench.noop", {"n": n}, key=f"bench-{n}")
    db.dispose()
    note(f"[{name}] {args.workers} processes: bare inserts, then {args.items} work items ...")
    seconds, rows = in_processes(url, "insert", args.items, args.workers)
    parallel_baseline = rows / seconds
    seconds, processed = in_processes(url, "work", args.items, args.workers)
    if processed != args.items:
        raise SystemExit(f"{name}: workers processed {processed} of {args.items} items")
    work_rate = processed / seconds
    report(f"{name}.bare_insert_commits_{args.workers}proc", parallel_baseline, "rows/s")
    report(f"{name}.work_items_claimed_completed_{args.workers}proc", work_rate, "items/s")
    report(f"{name}.work_vs_bare_insert_{args.workers}proc", work_rate / parallel_baseline,
           "ratio")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--referrals", type=int, default=200,
                        help="referrals driven through 5 transitions each")
    parser.add_argument("--items", type=int, default=1200, help="work items to process")
    parser.add_argument("--workers", type=int, default=4, help="worker processes")
    args = parser.parse_args()
    pg_url = os.environ.get("REFLOOP_BENCH_POSTGRES_URL") or \
        os.environ.get("REFLOOP_TEST_POSTGRES_URL")
    with scratch_databases(pg_url) as databases:
        for name, url in databases:
            bench_database(name, url, args)
    if not pg_url:
        print("postgresql: skipped (set REFLOOP_BENCH_POSTGRES_URL or "
              "REFLOOP_TEST_POSTGRES_URL to include it)", flush=True)


if __name__ == "__main__":
    main()
