"""Benchmark: full-resource notifications accepted per second by the hook endpoint.

Each request is what HAPI and sekmet send for an R4 classic subscription with payload: a
`PUT /hooks/<id>/ServiceRequest/<id>` carrying the resource (a new version each time, so nothing
is de-duplicated away) and the hook's Bearer secret. A 2xx means the raw notification and its work
item are committed to the store (SQLite WAL under a temporary var/, synchronous=NORMAL).

Baseline, measured in the same run with the same server set-up (`refloop serve`'s web role:
gunicorn, gthread, the configured web_workers and 8 threads each, Flask): an endpoint on the same
path that only returns 200. Senders are concurrent keep-alive HTTP clients in separate processes.

Usage: python bench/ingest.py [--requests N] [--senders S] [--workers W]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import socket
import statistics
import sys
import tempfile
import time
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

    class Bare(BaseApplication):  # type: ignore[misc]
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


def send_many(args: tuple[int, str, str, int, int, int]) -> list[float]:
    """One sender process: `threads` keep-alive connections, `count` requests in all."""
    import threading

    port, path, secret, count, threads, sender = args
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
    return latencies


def wait_up(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"server on port {port} did not start")


def measure(port: int, path: str, secret: str, total: int, senders: int,
            threads: int) -> dict[str, float]:
    per_sender = total // senders
    warm = send_many((port, path, secret, 50, 4, 999))  # warm-up, not counted
    assert warm
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(senders) as pool:
        results = pool.map(send_many, [(port, path, secret, per_sender, threads, s)
                                       for s in range(senders)])
    elapsed = time.perf_counter() - started
    latencies = sorted(x for r in results for x in r)
    return {"count": len(latencies), "rate": len(latencies) / elapsed,
            "p50": statistics.median(latencies) * 1000,
            "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000}


def run_server(target: Any, *args: Any) -> multiprocessing.Process:
    process = multiprocessing.get_context("fork").Process(target=target, args=args, daemon=False)
    process.start()
    return process


def stop(process: multiprocessing.Process) -> None:
    process.terminate()
    process.join(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--senders", type=int, default=2, help="sender processes")
    parser.add_argument("--threads", type=int, default=8, help="connections per sender")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    options = parser.parse_args()

    from referrals.store import connect
    from referrals.store.migrate import upgrade
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
    try:
        wait_up(bare_port)
        baseline = measure(bare_port, path, hook.secret, options.requests, options.senders,
                           options.threads)
    finally:
        stop(bare)

    ours = run_server(serve_refloop, settings)
    try:
        wait_up(settings.http_port)
        result = measure(settings.http_port, path, hook.secret, options.requests,
                         options.senders, options.threads)
    finally:
        stop(ours)
    stored = services.inbox.counts().get("received", 0)
    queued = services.work.counts().get("pending", 0)
    services.close()
    if stored < result["count"] or queued < result["count"]:
        raise SystemExit(f"only {stored} notifications stored / {queued} queued for "
                         f"{result['count']} answered")

    print(f"setup: gunicorn gthread, {options.workers} workers x 8 threads; SQLite WAL "
          f"synchronous=NORMAL; {options.senders} sender processes x {options.threads} "
          f"keep-alive connections; {multiprocessing.cpu_count()} CPUs")
    print(f"notifications_stored: {stored} count")
    print(f"ingest_rate: {result['rate']:.0f} notifications/s")
    print(f"ingest_p50: {result['p50']:.2f} ms")
    print(f"ingest_p99: {result['p99']:.2f} ms")
    print(f"bare_rate: {baseline['rate']:.0f} requests/s")
    print(f"bare_p50: {baseline['p50']:.2f} ms")
    print(f"bare_p99: {baseline['p99']:.2f} ms")
    print(f"ratio_vs_bare: {result['rate'] / baseline['rate']:.2f} x")


if __name__ == "__main__":
    main()
