"""Benchmark: full-resource notifications accepted per second by the hook endpoint.

Each request is what HAPI and sekmet send for an R4 classic subscription with payload: a
`PUT /hooks/<id>/ServiceRequest/<id>` carrying the resource (a new version each time, so nothing
is de-duplicated away) and the hook's Bearer secret. A 2xx means the raw notification and its work
item are committed to the store (SQLite WAL under a temporary var/, synchronous=FULL, the
default: each acknowledged notification has been fsync'ed).

Baseline, measured in the same run with the same server set-up (`refloop serve`'s web role:
gunicorn, gthread, the configured web_workers and 8 threads each, Flask): an endpoint on the same
path that only returns 200. Senders are concurrent keep-alive HTTP clients in separate processes.

Also printed: CPU milliseconds per request of the server processes and of the senders (the
senders share the 2 cores; their CPU per request against the bare endpoint bounds what any server
could reach here), and the mean number of notifications per commit (rows sharing a received_at).

The bare endpoint and Refloop run side by side and are measured in alternating rounds, so that
load from other work on a shared machine hits both; rates and latencies are the medians of the
rounds, and the ratio is the median of the rounds' ratios (each round's figures are printed).

Usage: python bench/ingest.py [--requests N] [--rounds R] [--senders S] [--threads T]
                              [--workers W]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_refloop(settings: Any) -> None:
    from refloop.roles import WebApplication

    WebApplication(settings).run()


def serve_bare(port: int, workers: int) -> None:
    from flask import Flask, Response
    from gunicorn.app.base import BaseApplication

    app = Flask("bare")

    @app.route("/hooks/<hook_id>/<path:rest>", methods=["PUT", "POST"])
    def bare(hook_id: str, rest: str) -> Response:
        return Response("", status=200)

    class Bare(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"127.0.0.1:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", 8)
            self.cfg.set("accesslog", None)

        def load(self) -> Flask:
            return app

    Bare().run()


def body_for(n: int, sender: int) -> tuple[str, bytes]:
    sr_id = f"bench-{sender}-{n}"
    resource = {
        "resourceType": "ServiceRequest", "id": sr_id,
        "meta": {"versionId": "1", "lastUpdated": "2026-11-27T10:00:00.000Z"},
        "status": "active", "intent": "order", "priority": "routine",
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "3457005",
                                  "display": "Patient referral"}]}],
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "306206005",
                             "display": "Referral to service"}]},
        "reasonCode": [{"text": "Follow-up of abnormal findings on examination"}],
        "subject": {"reference": f"Patient/p-{sender}-{n}"},
        "requester": {"reference": "Practitioner/d-1", "display": "Dr. Bench"},
        "insurance": [{"reference": f"Coverage/c-{sender}-{n}"}],
    }
    return sr_id, json.dumps(resource).encode()


def send_many(args: tuple[int, str, str, int, int, int]) -> tuple[list[float], float]:
    """One sender process: `threads` keep-alive connections, `count` requests in all."""
    import threading

    port, path, secret, count, threads, sender = args
    cpu = time.process_time()
    latencies: list[float] = []
    lock = threading.Lock()

    def run(worker: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        for n in range(worker, count, threads):
            sr_id, body = body_for(n, sender)
            started = time.perf_counter()
            conn.request("PUT", f"{path}/ServiceRequest/{sr_id}", body=body, headers={
                "Content-Type": "application/fhir+json; charset=utf-8",
                "Authorization": f"Bearer {secret}", "If-Match": 'W/"1"'})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"unexpected status {response.status}")
            mine.append(time.perf_counter() - started)
        conn.close()
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=run, args=(w,)) for w in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return latencies, time.process_time() - cpu


def wait_up(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"server on port {port} did not start")


def tree_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds (user, system) used so far by `pid` and its living descendants (Linux)."""
    user = system = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            user += int(stat[11]) / tick
            system += int(stat[12]) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return user, system


def ready() -> None:
    """Run in each sender process before timing starts (the processes are started by then)."""


def measure(pool: Any, port: int, path: str, secret: str, total: int, senders: int,
            threads: int, server_pid: int, round_no: int) -> dict[str, float]:
    """One timed run; resource ids are new in every round (nothing is de-duplicated away)."""
    per_sender = total // senders
    first = (round_no + 1) * 1000
    warm, _ = send_many((port, path, secret, 50, 4, first + 999))  # warm-up, not counted
    assert warm
    user, system = tree_cpu(server_pid)
    started = time.perf_counter()
    results = pool.map(send_many, [(port, path, secret, per_sender, threads, first + s)
                                   for s in range(senders)])
    elapsed = time.perf_counter() - started
    user_after, system_after = tree_cpu(server_pid)
    latencies = sorted(x for r, _ in results for x in r)
    count = len(latencies)
    return {"count": count, "rate": count / elapsed,
            "p50": statistics.median(latencies) * 1000,
            "p99": latencies[int(count * 0.99) - 1] * 1000,
            "server_cpu": (user_after - user + system_after - system) / count * 1000,
            "server_sys": (system_after - system) / count * 1000,
            "client_cpu": sum(c for _, c in results) / count * 1000}


def median_of(rounds: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def run_server(target: Any, *args: Any) -> BaseProcess:
    process = multiprocessing.get_context("fork").Process(target=target, args=args, daemon=False)
    process.start()
    return process


def stop(process: BaseProcess) -> None:
    process.terminate()
    process.join(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--senders", type=int, default=2, help="sender processes")
    parser.add_argument("--threads", type=int, default=8, help="connections per sender")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating bare/ingest measurements; figures are their medians")
    options = parser.parse_args()

    import sqlalchemy as sa

    from referrals.store import connect
    from referrals.store.migrate import upgrade
    from referrals.store.schema import inbox
    from refloop.services import build_services
    from refloop.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="refloop-bench-"))
    settings = Settings(var_dir=tmp / "var", http_port=free_port(), log_level="WARNING",
                        web_workers=options.workers)
    settings.var_dir.mkdir(parents=True)
    db = connect(settings.database)
    upgrade(db)
    db.dispose()
    services = build_services(settings)
    hook = services.adapters["subscriptions"].open_hook(
        server="http://ehr.bench/fhir", purpose="referrals", deliver_kind="subscriptions.referral")
    path = hook.url.removeprefix(settings.base_url)

    bare_port = free_port()
    bare = run_server(serve_bare, bare_port, options.workers)
    ours = run_server(serve_refloop, settings)
    bare_rounds: list[dict[str, float]] = []
    ingest_rounds: list[dict[str, float]] = []
    per_round = options.requests // options.rounds
    try:
        wait_up(bare_port)
        wait_up(settings.http_port)
        with multiprocessing.get_context("spawn").Pool(options.senders) as pool:
            pool.starmap(ready, [()] * options.senders)
            for n in range(options.rounds):  # alternate, so load from elsewhere hits both
                print(f"round {n + 1}/{options.rounds}", file=sys.stderr)
                bare_rounds.append(measure(pool, bare_port, path, hook.secret, per_round,
                                           options.senders, options.threads, bare.pid or 0,
                                           n))
                ingest_rounds.append(measure(pool, settings.http_port, path, hook.secret,
                                             per_round, options.senders, options.threads,
                                             ours.pid or 0, n))
    finally:
        stop(bare)
        stop(ours)
    result = {key: median_of(ingest_rounds, key) for key in ingest_rounds[0]}
    result["count"] = sum(r["count"] for r in ingest_rounds)
    baseline = {key: median_of(bare_rounds, key) for key in bare_rounds[0]}
    ratios = [i["rate"] / b["rate"] for i, b in zip(ingest_rounds, bare_rounds, strict=True)]
    stored = services.inbox.counts().get("received", 0)
    queued = services.work.counts().get("pending", 0)
    with services.db.read() as conn:
        commits = conn.execute(sa.select(sa.func.count(sa.distinct(inbox.c.received_at)))
                               .where(inbox.c.status == "received")).scalar_one()
    services.close()
    if stored < result["count"] or queued < result["count"]:
        raise SystemExit(f"only {stored} notifications stored / {queued} queued for "
                         f"{result['count']} answered")

    print(f"setup: gunicorn gthread, {options.workers} workers x 8 threads; SQLite WAL "
          f"synchronous={settings.sqlite_synchronous}; "
          f"{options.senders} sender processes x {options.threads} keep-alive connections; "
          f"{multiprocessing.cpu_count()} CPUs")
    print(f"notifications_stored: {stored} count")
    print(f"notifications_per_commit: {stored / max(commits, 1):.1f} count")
    print(f"ingest_rate: {result['rate']:.0f} notifications/s")
    print(f"ingest_p50: {result['p50']:.2f} ms")
    print(f"ingest_p99: {result['p99']:.2f} ms")
    print(f"ingest_server_cpu: {result['server_cpu']:.2f} ms/request")
    print(f"ingest_server_system_cpu: {result['server_sys']:.2f} ms/request")
    print(f"ingest_client_cpu: {result['client_cpu']:.2f} ms/request")
    print(f"bare_rate: {baseline['rate']:.0f} requests/s")
    print(f"bare_p50: {baseline['p50']:.2f} ms")
    print(f"bare_p99: {baseline['p99']:.2f} ms")
    print(f"bare_server_cpu: {baseline['server_cpu']:.2f} ms/request")
    print(f"bare_server_system_cpu: {baseline['server_sys']:.2f} ms/request")
    print(f"bare_client_cpu: {baseline['client_cpu']:.2f} ms/request")
    for n, (i, b, r) in enumerate(zip(ingest_rounds, bare_rounds, ratios, strict=True), 1):
        print(f"round_{n}_ingest_rate: {i['rate']:.0f} notifications/s")
        print(f"round_{n}_bare_rate: {b['rate']:.0f} requests/s")
        print(f"round_{n}_ratio: {r:.2f} x")
    print(f"ingest_rate_best: {max(r['rate'] for r in ingest_rounds):.0f} notifications/s")
    print(f"ratio_vs_bare: {statistics.median(ratios):.2f} x")


if __name__ == "__main__":
    main()
