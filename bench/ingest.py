"""Benchmark: full-resource notifications accepted per second by the hook endpoint.

Each request is what HAPI and sekmet send for an R4 classic subscription with payload: a
`PUT /hooks/<id>/ServiceRequest/<id>` carrying the resource (a new version each time, so nothing
is de-duplicated away) and the hook's Bearer secret. A 2xx means the raw notification and its work
item are committed to the store (SQLite WAL under a temporary var/, synchronous=FULL, the
default: each acknowledged notification has been fsync'ed).

Baselines, measured in the same run with the same server set-up (`refloop serve`'s web role:
gunicorn's master with the configured web_workers, each running the HTTP edge): a minimal WSGI
endpoint (reads the body, answers 200) and a Flask endpoint on the same path; and, as a reference,
the minimal WSGI endpoint under gunicorn's gthread worker (2 x 8 threads: the server Refloop used
before the edge). Senders are concurrent keep-alive HTTP clients in separate processes.

Also measured: the notification rate while 100 authenticated uploads, stalled half way, are held
open on the same server (opened again before each round, so the request deadline does not close
them), against the rate without them; a probe of the disk in each round (one fsync'ed SQLite
commit of 5 rows, p50 and p99: the floor under every acknowledged notification); CPU milliseconds
per request of the server processes and of the senders; and the mean number of notifications per
commit (rows sharing a received_at).

Everything runs side by side and is measured in alternating rounds, so that load from other work
on a shared machine hits all; rates and latencies are the medians of the rounds, and each ratio is
the median of the rounds' ratios (each round's figures are printed).

Usage: python bench/ingest.py [--requests N] [--rounds R] [--senders S] [--threads T]
                              [--workers W] [--stalled N]
"""

from __future__ import annotations

import argparse
import atexit
import http.client
import json
import multiprocessing
import os
import shutil
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


def bare_flask() -> Any:
    from flask import Flask, Response

    app = Flask("bare")

    @app.route("/hooks/<hook_id>/<path:rest>", methods=["PUT", "POST"])
    def bare(hook_id: str, rest: str) -> Response:
        return Response("", status=200)

    return app


def bare_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The minimal WSGI endpoint: reads the body, answers 200."""
    stream = environ["wsgi.input"]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        stream.read(length)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "0")])
    return [b""]


def serve_bare(port: int, workers: int, kind: str, server: str) -> None:
    """A baseline endpoint ("flask" or "wsgi") under the edge (`refloop serve`'s server) or
    under gunicorn's gthread worker (2 x 8 threads, the server Refloop used before)."""
    from gunicorn.app.base import BaseApplication

    from refloop.edge.server import EdgeApp

    target = bare_flask() if kind == "flask" else bare_wsgi

    class Bare(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"127.0.0.1:{port}")
            self.cfg.set("workers", workers)
            if server == "edge":
                self.cfg.set("worker_class", "refloop.edge.worker.EdgeWorker")
            else:
                self.cfg.set("worker_class", "gthread")
                self.cfg.set("threads", 8)
            self.cfg.set("accesslog", None)

        def load(self) -> Any:
            return EdgeApp(target) if server == "edge" else target

    Bare().run()


def commit_probe(directory: Path, commits: int = 300) -> tuple[float, float]:
    """(p50, p99) ms of one fsync'ed SQLite commit of 5 rows of 1 KB (WAL, synchronous=FULL) in
    this run: the floor that the disk puts under every acknowledged notification."""
    import sqlite3

    path = directory / "probe.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, b BLOB)")
    times = []
    for _ in range(commits):
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO t (b) VALUES (?)", [(os.urandom(1000),)] * 5)
        conn.execute("COMMIT")
        times.append(time.perf_counter() - started)
    conn.close()
    times.sort()
    return times[len(times) // 2] * 1000, times[int(len(times) * 0.99)] * 1000


class Stalled:
    """`count` authenticated uploads that stop half way and stay open, from 4 loopback
    addresses (under the per-source limit), held until close()."""

    def __init__(self, port: int, path: str, secret: str, count: int) -> None:
        _, body = body_for(0, 0)
        head = (f"PUT {path}/ServiceRequest/stalled HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {secret}\r\nContent-Type: application/fhir+json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.sockets = []
        for n in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5,
                                            source_address=(f"127.0.0.{2 + n % 4}", 0))
            sock.sendall(head + body[: len(body) // 2])
            self.sockets.append(sock)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


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
    parser.add_argument("--workers", type=int, default=2, help="web worker processes")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating measurements; figures are their medians")
    parser.add_argument("--stalled", type=int, default=100,
                        help="stalled uploads held open during the 'stalled' measurement")
    options = parser.parse_args()

    import sqlalchemy as sa

    from referrals.store import connect
    from referrals.store.migrate import upgrade
    from referrals.store.schema import inbox
    from refloop.services import build_services
    from refloop.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="refloop-bench-"))
    atexit.register(shutil.rmtree, tmp, True)  # removed however the run ends
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

    baselines = {"wsgi": ("wsgi", "edge"), "flask": ("flask", "edge"),
                 "wsgi_gthread": ("wsgi", "gthread")}
    ports = {name: free_port() for name in baselines}
    servers = {name: run_server(serve_bare, ports[name], options.workers, *baselines[name])
               for name in baselines}
    ours = run_server(serve_refloop, settings)
    rounds: dict[str, list[dict[str, float]]] = {n: [] for n in [*baselines, "ingest",
                                                                 "stalled"]}
    per_round = options.requests // options.rounds
    probes: list[tuple[float, float]] = []
    try:
        for port in [*ports.values(), settings.http_port]:
            wait_up(port)
        with multiprocessing.get_context("spawn").Pool(options.senders) as pool:
            pool.starmap(ready, [()] * options.senders)
            for n in range(options.rounds):  # alternate, so load from elsewhere hits all
                print(f"round {n + 1}/{options.rounds}", file=sys.stderr)
                for name in baselines:
                    rounds[name].append(measure(pool, ports[name], path, hook.secret,
                                                per_round, options.senders, options.threads,
                                                servers[name].pid or 0, n))
                rounds["ingest"].append(measure(pool, settings.http_port, path, hook.secret,
                                                per_round, options.senders, options.threads,
                                                ours.pid or 0, n))
                probes.append(commit_probe(tmp))
                stalled = Stalled(settings.http_port, path, hook.secret, options.stalled)
                try:
                    rounds["stalled"].append(measure(
                        pool, settings.http_port, path, hook.secret, per_round,
                        options.senders, options.threads, ours.pid or 0, n + 100))
                finally:
                    stalled.close()
    finally:
        for process in [*servers.values(), ours]:
            stop(process)
    medians = {name: {key: median_of(values, key) for key in values[0]}
               for name, values in rounds.items()}
    answered = sum(r["count"] for name in ("ingest", "stalled") for r in rounds[name])
    stored = services.inbox.counts().get("received", 0)
    queued = services.work.counts().get("pending", 0)
    with services.db.read() as conn:
        commits = conn.execute(sa.select(sa.func.count(sa.distinct(inbox.c.received_at)))
                               .where(inbox.c.status == "received")).scalar_one()
    services.close()
    if stored < answered or queued < answered:
        raise SystemExit(f"only {stored} notifications stored / {queued} queued for "
                         f"{answered} answered")

    def ratios(name: str, against: str) -> list[float]:
        return [a["rate"] / b["rate"] for a, b in zip(rounds[name], rounds[against],
                                                        strict=True)]

    print(f"setup: refloop serve's web role (gunicorn master, {options.workers} edge workers); "
          f"SQLite WAL synchronous={settings.sqlite_synchronous}; {options.senders} sender "
          f"processes x {options.threads} keep-alive connections; "
          f"{multiprocessing.cpu_count()} CPUs; {options.rounds} rounds of {per_round}")
    print(f"notifications_stored: {stored} count")
    print(f"notifications_per_commit: {stored / max(commits, 1):.1f} count")
    print(f"sqlite_commit_probe_p50: {statistics.median(p for p, _ in probes):.2f} ms")
    print(f"sqlite_commit_probe_p99: {statistics.median(p for _, p in probes):.2f} ms")
    labels = {"ingest": "notifications/s", "stalled": "notifications/s"}
    for name in ("ingest", "stalled", "wsgi", "flask", "wsgi_gthread"):
        figures = medians[name]
        prefix = {"wsgi": "bare_wsgi", "flask": "bare_flask",
                  "wsgi_gthread": "bare_wsgi_gthread", "stalled": "ingest_stalled"}.get(
                      name, name)
        print(f"{prefix}_rate: {figures['rate']:.0f} {labels.get(name, 'requests/s')}")
        print(f"{prefix}_p50: {figures['p50']:.2f} ms")
        print(f"{prefix}_p99: {figures['p99']:.2f} ms")
        print(f"{prefix}_server_cpu: {figures['server_cpu']:.2f} ms/request")
        print(f"{prefix}_client_cpu: {figures['client_cpu']:.2f} ms/request")
    for n in range(options.rounds):
        print(f"round_{n + 1}: ingest {rounds['ingest'][n]['rate']:.0f}, stalled "
              f"{rounds['stalled'][n]['rate']:.0f}, bare_wsgi {rounds['wsgi'][n]['rate']:.0f}, "
              f"bare_flask {rounds['flask'][n]['rate']:.0f}, bare_wsgi_gthread "
              f"{rounds['wsgi_gthread'][n]['rate']:.0f} per s")
    print(f"ratio_vs_bare_wsgi: {statistics.median(ratios('ingest', 'wsgi')):.2f} x")
    print(f"ratio_vs_bare_flask: {statistics.median(ratios('ingest', 'flask')):.2f} x")
    print(f"ratio_vs_bare_wsgi_gthread: "
          f"{statistics.median(ratios('ingest', 'wsgi_gthread')):.2f} x")
    print(f"ratio_stalled_vs_not: {statistics.median(ratios('stalled', 'ingest')):.2f} x")


if __name__ == "__main__":
    main()
