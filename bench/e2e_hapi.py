"""End-to-end benchmark against the HAPI FHIR peer (interop/hapi, HAPI 8.8.0, R4, H2 in memory).

Refloop registers an R4 classic rest-hook Subscription on HAPI. Its web role runs as in
production (`refloop serve --role web`: gunicorn, 2 processes x 8 threads) and serves the real
`/hooks/<id>` endpoint on a loopback port; the worker role's threads (--workers, default 1 like
`worker_processes`) run in this process, turning stored notifications into referrals (each
ServiceRequest is re-read from HAPI with its patient, requester and coverage). The store is a
scratch SQLite file (the embedded default, synchronous FULL), or a scratch PostgreSQL database
with --postgres-url.

1. Latency: --referrals ServiceRequests created on HAPI one after another at --rate per second;
   for each, the time from the start of the create request to the moment the referral is
   committed in Refloop (the notification's work item done). p50, p95, max.
2. HAPI's own create throughput: --throughput ServiceRequests created by --clients concurrent
   clients (Refloop's endpoint receiving, its worker paused).
3. Refloop, in the same run: (a) processing capacity — the worker turns the notifications of
   step 2 into referrals as fast as it can (asynchronous: each waits durably in the work queue);
   (b) ingest capacity — the same notification bodies PUT at a hook by --clients concurrent
   clients, each stored durably in the inbox and acknowledged (what HAPI's delivery waits for).

The last lines are ratios against HAPI's create throughput: processing, then ingest (the last
line). Above 1, HAPI is the bottleneck and Refloop keeps up. HAPI, Refloop and the load generator
share the machine's cores, so absolute numbers drift between runs; the ratios are the figures to
watch.

    python bench/e2e_hapi.py [--referrals 200] [--rate 10] [--throughput 200] [--clients 4]
                             [--workers 1] [--batch 0] [--hapi-url http://127.0.0.1:PORT/fhir]
                             [--postgres-url postgresql://user@host:port/db]

Without --hapi-url (or REFLOOP_INTEROP_HAPI_URL) the peer is built and started with
interop/hapi/run on a free port (Java 17 and Maven needed) and stopped at the end. What the run
creates (the web role, Refloop's var_dir, the peer's data directory, the scratch database) is
stopped and removed at the end, also when a step fails or the run is interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from scratch import scratch_postgres  # noqa: E402

from referrals.store import connect  # noqa: E402
from referrals.store.migrate import upgrade  # noqa: E402
from referrals.store.schema import inbox  # noqa: E402
from referrals.store.work import WorkItem  # noqa: E402
from referrals.worker import Worker, batch_size  # noqa: E402
from refloop.services import Services, build_services  # noqa: E402
from refloop.settings import load_settings  # noqa: E402
from refloop.wiring import all_handlers  # noqa: E402
from subscriptions.adapter import SubscriptionsAdapter  # noqa: E402

RUN = ROOT / "interop" / "hapi" / "run"
FHIR_JSON = "application/fhir+json"
NOTIFICATION = "subscriptions.notification"
WAIT_S = 180.0


def report(metric: str, value: float, unit: str) -> None:
    print(f"{metric}: {value:.2f} {unit}", flush=True)


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def hapi_peer(url: str) -> Iterator[str]:
    """The given HAPI base URL, or a peer started with interop/hapi/run (stopped afterwards)."""
    if url:
        yield url.rstrip("/")
        return
    with tempfile.TemporaryDirectory(prefix="bench-hapi-", ignore_cleanup_errors=True) as data:
        env = {**os.environ, "HAPI_PEER_DATA_DIR": data}
        note("starting the HAPI FHIR peer (interop/hapi/run start; ~30-60 s) ...")
        started = subprocess.run(["bash", str(RUN), "start", str(free_port())], env=env,
                                 stdout=subprocess.PIPE, text=True, check=False)
        try:
            if started.returncode != 0:
                sys.exit("could not start the HAPI FHIR peer (Java 17 and Maven needed); "
                         "see the messages above")
            yield started.stdout.strip().splitlines()[-1]
        finally:
            subprocess.run(["bash", str(RUN), "stop"], env=env, capture_output=True,
                           check=False)


@contextmanager
def scratch_database(postgres_url: str) -> Iterator[str]:
    """A fresh SQLite file, or a scratch database on the PostgreSQL server (dropped after)."""
    if not postgres_url:
        with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
            yield f"sqlite:///{tmp}/refloop.db"
        return
    with scratch_postgres(postgres_url, "bench_e2e") as url:
        yield url


class Refloop:
    """Refloop as it runs in production: the web role (`refloop serve --role web`: gunicorn,
    gthread) in its own process group, and the worker role's threads here (so the bench can pause
    them and record when each ServiceRequest's notification was processed). Its var_dir is a
    temporary directory that close() removes; a start that fails midway closes what it
    started."""

    def __init__(self, database_url: str, hapi: str, criteria: str, workers: int,
                 batch: int = 0) -> None:
        self.var = tempfile.TemporaryDirectory(prefix="bench-var-", ignore_cleanup_errors=True)
        self.web: subprocess.Popen[bytes] | None = None
        self.services: Services | None = None
        self.threads: list[threading.Thread] = []
        self.stopping = threading.Event()
        try:
            self._start(database_url, hapi, criteria, workers, batch)
        except BaseException:
            self.close()
            raise

    def _start(self, database_url: str, hapi: str, criteria: str, workers: int,
               batch: int) -> None:
        db = connect(database_url)
        upgrade(db)
        db.dispose()
        self.port = free_port()
        var_dir = Path(self.var.name)
        config = var_dir / "refloop.toml"
        config.write_text(f'database_url = "{database_url}"\nvar_dir = "{var_dir}"\n'
                          f'http_port = {self.port}\nlog_level = "WARNING"\n\n'
                          f'[[fhir_servers]]\nbase_url = "{hapi}"\ncriteria = "{criteria}"\n')
        self.web = subprocess.Popen([sys.executable, "-m", "refloop", "--config", str(config),
                                     "serve", "--role", "web"], start_new_session=True)
        self.services = build_services(load_settings(config))
        wait_until(self._healthy, "Refloop's web role")
        self.done: dict[str, float] = {}
        self.running = threading.Event()
        handlers = all_handlers(self.services)
        handlers[NOTIFICATION] = self._recording(handlers[NOTIFICATION])
        self.threads = [threading.Thread(target=self._work, args=(Worker(
            self.ready.work, handlers, name=f"bench-{n}", batch=batch),), daemon=True)
            for n in range(workers)]
        for thread in self.threads:
            thread.start()
        self.running.set()

    def _healthy(self) -> bool:
        assert self.web is not None
        if self.web.poll() is not None:
            sys.exit(f"Refloop's web role exited with {self.web.returncode}")
        try:
            return requests.get(f"{self.ready.settings.base_url}/healthz",
                                timeout=2).status_code == 200
        except requests.RequestException:
            return False

    @property
    def ready(self) -> Services:
        assert self.services is not None
        return self.services

    @property
    def adapter(self) -> SubscriptionsAdapter:
        found: SubscriptionsAdapter = self.ready.adapters["subscriptions"]
        return found

    def _recording(self, handler: Callable[[WorkItem], None]) -> Recording:
        return Recording(handler, self.done)

    def _work(self, worker: Worker) -> None:
        while not self.stopping.is_set():
            if not self.running.wait(0.05):
                continue
            if not worker.run_once():
                time.sleep(0.005)

    def received(self) -> int:
        with self.ready.db.read() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(inbox)).scalar() or 0)

    def received_at(self) -> dict[str, float]:
        """When each ServiceRequest's first notification was stored (epoch seconds)."""
        with self.ready.db.read() as c:
            rows = c.execute(sa.select(inbox.c.received_at, inbox.c.body)
                             .order_by(inbox.c.id)).all()
        found: dict[str, float] = {}
        for at, body in rows:
            found.setdefault(str(json.loads(bytes(body))["id"]), at.timestamp())
        return found

    def bodies(self) -> list[tuple[str, bytes]]:
        with self.ready.db.read() as c:
            rows = c.execute(sa.select(inbox.c.body).order_by(inbox.c.id)).scalars().all()
        found = []
        for body in rows:
            resource = json.loads(bytes(body))
            found.append((f"ServiceRequest/{resource['id']}", bytes(body)))
        return found

    def close(self) -> None:
        """Stop what was started (threads, the web role's process group, the store), then
        remove the var_dir."""
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)
        if self.web is not None:
            self.web.terminate()  # gunicorn's master stops its workers
            try:
                self.web.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.web.pid, signal.SIGKILL)
                self.web.wait()
        if self.services is not None:
            self.services.close()
        self.var.cleanup()


class Recording:
    """The notification handler, recording when each ServiceRequest's referral was committed;
    its `prepare` (the batch's concurrent EHR re-reads) is passed on to the worker."""

    def __init__(self, handler: Callable[[WorkItem], None], done: dict[str, float]) -> None:
        self.handler = handler
        self.done = done
        self.batch_size = batch_size(handler)

    def prepare(self, items: list[WorkItem]) -> None:
        prepare = getattr(self.handler, "prepare", None)
        if prepare is not None:
            prepare(items)

    def completed(self, item: WorkItem) -> bool:
        completed = getattr(self.handler, "completed", None)
        return bool(completed is not None and completed(item))

    def __call__(self, item: WorkItem) -> None:
        self.handler(item)
        subpath = str(item.payload.get("subpath") or "")
        if subpath.startswith("ServiceRequest/"):
            self.done.setdefault(subpath.split("/")[1], time.time())


def wait_until(check: Callable[[], bool], what: str, seconds: float = WAIT_S) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            sys.exit(f"gave up after {seconds:.0f} s waiting for {what}")
        time.sleep(0.02)


def service_request(patient: str, n: int) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "priority": "routine", "subject": {"reference": patient},
            "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "3457005",
                                      "display": "Patient referral"}]}],
            "code": {"text": "Referral to cardiology service"},
            "reasonCode": [{"text": f"bench {n}"}], "performerType": {"text": "Cardiology"}}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--referrals", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--throughput", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1,
                        help="worker threads turning notifications into referrals")
    parser.add_argument("--batch", type=int, default=0,
                        help="work items a worker claims per round (worker_batch); default 0: "
                        "each kind's own (notifications 100)")
    parser.add_argument("--hapi-url", default=os.environ.get("REFLOOP_INTEROP_HAPI_URL", ""))
    parser.add_argument("--postgres-url", default="",
                        help="run on a scratch database of this PostgreSQL server "
                             "(default: a scratch SQLite file)")
    args = parser.parse_args()
    # A SIGTERM ends the run through the `finally` blocks (Subscription deleted, web role and a
    # peer started here stopped).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    with hapi_peer(args.hapi_url) as hapi, scratch_database(args.postgres_url) as db_url:
        local = threading.local()

        def session() -> requests.Session:
            if not hasattr(local, "http"):
                local.http = requests.Session()
                local.http.headers.update({"Content-Type": FHIR_JSON, "Accept": FHIR_JSON})
            found: requests.Session = local.http
            return found

        def create(resource: dict[str, Any]) -> tuple[str, float]:
            started = time.time()
            r = session().post(f"{hapi}/{resource['resourceType']}", data=json.dumps(resource),
                          timeout=60)
            r.raise_for_status()
            return str(r.json()["id"]), started

        patient = create({"resourceType": "Patient", "name": [
            {"family": f"Bench-{uuid.uuid4().hex[:8]}"}]})[0]
        criteria = f"ServiceRequest?intent=order&subject=Patient/{patient}"
        refloop = Refloop(db_url, hapi, criteria, args.workers, args.batch)
        try:
            outcome = refloop.adapter.register(hapi)
            note(f"HAPI {hapi}; Refloop {refloop.ready.settings.base_url} on "
                 f"{refloop.ready.db.dialect}; Subscription/{outcome.subscription_id} "
                 f"{outcome.flavour} {outcome.status}")
            try:
                run(args, hapi, f"Patient/{patient}", refloop, create)
            finally:
                if outcome.subscription_id:
                    session().delete(f"{hapi}/Subscription/{outcome.subscription_id}",
                                     timeout=30)
        finally:
            refloop.close()


def run(args: argparse.Namespace, hapi: str, patient: str, refloop: Refloop,
        create: Callable[[dict[str, Any]], tuple[str, float]]) -> None:
    # 1. Latency, one create at a time at a steady rate.
    note(f"1/3 latency: {args.referrals} ServiceRequests at {args.rate:g}/s ...")
    started: dict[str, float] = {}
    pace = 1.0 / args.rate
    for n in range(args.referrals):
        sr_id, at = create(service_request(patient, n))
        started[sr_id] = at
        time.sleep(max(0.0, at + pace - time.time()))
    wait_until(lambda: all(i in refloop.done for i in started), "every referral")
    latencies = [(refloop.done[i] - at) * 1000 for i, at in started.items()]
    received = refloop.received_at()
    delivery = [(received[i] - at) * 1000 for i, at in started.items()]
    ours = [(refloop.done[i] - received[i]) * 1000 for i in started]
    report("referrals", len(latencies), "count")
    report("latency_p50", percentile(latencies, 0.50), "ms")
    report("latency_p95", percentile(latencies, 0.95), "ms")
    report("latency_max", max(latencies), "ms")
    report("latency_mean", statistics.fmean(latencies), "ms")
    # Baseline, same referrals: HAPI's part (create -> notification stored by Refloop) and
    # Refloop's part (stored -> referral committed, including the re-read from HAPI).
    report("hapi_delivery_p50", percentile(delivery, 0.50), "ms")
    report("hapi_delivery_p95", percentile(delivery, 0.95), "ms")
    report("refloop_part_p50", percentile(ours, 0.50), "ms")
    report("refloop_part_p95", percentile(ours, 0.95), "ms")
    report("ratio_latency_p95_to_hapi_delivery_p95",
           percentile(latencies, 0.95) / percentile(delivery, 0.95), "x")

    # 2. HAPI's create throughput (Refloop's endpoint receives, its worker waits).
    note(f"2/3 HAPI create throughput: {args.throughput} creates, {args.clients} clients ...")
    refloop.running.clear()
    time.sleep(0.2)
    base = refloop.received()
    t0 = time.monotonic()
    with ThreadPoolExecutor(args.clients) as pool:
        ids = [i for i, _ in pool.map(create, (service_request(patient, 10_000 + n)
                                               for n in range(args.throughput)))]
    hapi_rate = len(ids) / (time.monotonic() - t0)
    report("hapi_create_throughput", hapi_rate, "creates/s")
    wait_until(lambda: refloop.received() - base >= len(ids), "HAPI's notifications")
    report("hapi_delivered_throughput", len(ids) / (time.monotonic() - t0), "notifications/s")

    # 3a. Refloop's processing capacity: the stored notifications into referrals.
    note("3/3 Refloop: processing capacity, then ingest capacity ...")
    t1 = time.monotonic()
    refloop.running.set()
    wait_until(lambda: all(i in refloop.done for i in ids), "the referrals of step 2")
    processing = len(ids) / (time.monotonic() - t1)
    report("refloop_processing_capacity", processing, "referrals/s")

    # 3b. Refloop's ingest capacity: the same bodies PUT at a fresh hook, stored in the inbox.
    refloop.running.clear()
    hook = refloop.adapter.registry.open_hook(server=hapi, purpose="referrals",
                                              deliver_kind="subscriptions.referral")
    bodies = refloop.bodies()[-len(ids):]
    headers = {"Content-Type": FHIR_JSON, "Authorization": f"Bearer {hook.secret}"}
    local = threading.local()

    def put(item: tuple[str, bytes]) -> int:
        path, body = item
        if not hasattr(local, "http"):
            local.http = requests.Session()
        return local.http.put(f"{hook.url}/{path}", data=body, headers=headers,
                           timeout=60).status_code

    t2 = time.monotonic()
    with ThreadPoolExecutor(args.clients) as pool:
        statuses = list(pool.map(put, bodies))
    endpoint = len(bodies) / (time.monotonic() - t2)
    if set(statuses) != {200}:
        sys.exit(f"the endpoint refused notifications: {sorted(set(statuses))}")
    report("refloop_ingest_capacity", endpoint, "notifications/s")

    report("ratio_refloop_processing_to_hapi_create", processing / hapi_rate, "x")
    if processing < hapi_rate:
        note(f"processing is {hapi_rate / processing:.1f}x slower than HAPI creates: a burst "
             "waits in Refloop's durable work queue (nothing is lost; referrals lag)")
    report("ratio_refloop_ingest_to_hapi_create", endpoint / hapi_rate, "x")


if __name__ == "__main__":
    main()
