"""The Prometheus figures while two real worker processes (`refloop serve --role worker`) run:
their counters (multi-process files) summed in one scrape and equal to what the store says was
done, the store's figures (inbox, work queue, quarantine), parsed with prometheus-client's own
parser. `/metrics` on the public port needs a token with `metrics:read`; the metrics role
answers on its own loopback address."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from analytics.metrics_web import metrics_role
from referrals.store.schema import work_items
from refloop.app import create_app
from refloop.services import build_services
from refloop.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
KIND = "analytics.rollup"
ITEMS = 40


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_two_worker_processes_counted_in_one_scrape(database_url: str, tmp_path: Path,
                                                    fhir_auth: Any) -> None:
    metrics_dir = tmp_path / "metrics"
    settings = Settings(var_dir=tmp_path / "var", database_url=database_url,
                        sections={"analytics": {"metrics_dir": str(metrics_dir)}})
    services = build_services(settings)
    services.inbox.accept("fhir-subscription", "ehr", b"{}", work_kind=None)
    services.inbox.accept("hl7v2", "lab", b"MSH|^~\\&|", work_kind=None, status="processed")
    services.work.enqueue(KIND, {"rebuild": True}, key="test-rollup-bad")  # refused payload
    env = {**os.environ, "REFLOOP_CONFIG": "", "REFLOOP_DATABASE_URL": database_url,
           "REFLOOP_VAR_DIR": str(tmp_path / "var"), "REFLOOP_LOG_LEVEL": "WARNING",
           "REFLOOP_ANALYTICS__METRICS_DIR": str(metrics_dir), "REFLOOP_WORKER_BATCH": "1",
           "PYTHONPATH": str(ROOT)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    workers = [subprocess.Popen([sys.executable, "-m", "refloop", "serve", "--role", "worker"],
                                env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
               for _ in range(2)]
    try:
        # rounds of items until each process has counted some (one may be quicker to claim)
        for round_ in range(20):
            for n in range(ITEMS):
                services.work.enqueue(KIND, {}, key=f"test-rollup-{round_}-{n}")
            deadline = time.monotonic() + 120
            while _pending(services) and time.monotonic() < deadline:
                assert all(w.poll() is None for w in workers), "a worker process stopped"
                time.sleep(0.1)
            assert not _pending(services), "the workers did not finish the items"
            if {str(w.pid) for w in workers} <= _counted_by(metrics_dir):
                break
        client = create_app(services).test_client()
        assert client.get("/metrics").status_code == 401
        tasks = fhir_auth.headers(client, services, "system/Task.rs")
        assert client.get("/metrics", headers=tasks).status_code == 403
        reader = fhir_auth.headers(client, services, "metrics:read")
        # a worker counts an item just after committing it: wait for the counters to catch up
        deadline = time.monotonic() + 30
        while True:
            done, quarantined = _outcomes(services)
            scrape = client.get("/metrics", headers=reader)
            assert scrape.status_code == 200
            found = samples(scrape.get_data(as_text=True))
            if (value(found, "refloop_work_seconds_count", kind=KIND) == done + 1
                    or time.monotonic() > deadline):
                break
            time.sleep(0.05)
        assert scrape.headers["Content-Type"].startswith("text/plain")
        assert done >= ITEMS and quarantined == 1
        # counted by the two processes, summed across their files: what the store says
        assert value(found, "refloop_work_items_total", kind=KIND, outcome="done") == done
        assert value(found, "refloop_work_items_total", kind=KIND,
                     outcome="quarantined") == 1
        assert value(found, "refloop_work_seconds_count", kind=KIND) == done + 1
        assert {str(w.pid) for w in workers} <= _counted_by(metrics_dir)
        # read from the store
        assert value(found, "refloop_work_depth", kind=KIND, state="due") == 0
        assert value(found, "refloop_work_quarantined", kind=KIND) == 1
        assert value(found, "refloop_quarantine_open", origin="work", kind=KIND) == 1
        assert value(found, "refloop_inbox_depth", channel="fhir-subscription") == 1
        assert value(found, "refloop_inbox_depth", channel="hl7v2") == 0
        assert value(found, "refloop_inbox_received_total", channel="hl7v2") == 1
        assert value(found, "refloop_inbox_oldest_age_seconds",
                     channel="fhir-subscription") >= 0
        assert ("refloop_outreach_decisions_total", ()) not in found  # no labels, no sample
        # the metrics role: the same figures on its own address, without a token
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        stop = threading.Event()
        operations = services.adapters["analytics"].operations
        role = threading.Thread(target=metrics_role(operations, metrics_dir, "127.0.0.1", port),
                                args=(stop,), daemon=True)
        role.start()
        try:
            body = _get(f"http://127.0.0.1:{port}/metrics")
            again = samples(body)
            assert value(again, "refloop_work_items_total", kind=KIND, outcome="done") == done
            assert value(again, "refloop_inbox_received_total",
                         channel="fhir-subscription") == 1
        finally:
            stop.set()
            role.join(timeout=10)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
        services.close()


def _counted_by(metrics_dir: Path) -> set[str]:
    """The processes that have written counters (prometheus-client's counter_<pid>.db)."""
    return {p.stem.rsplit("_", 1)[-1] for p in metrics_dir.glob("counter_*.db")}


def _pending(services: Any) -> int:
    with services.db.read() as c:
        return int(c.execute(sa.select(sa.func.count()).select_from(work_items).where(
            work_items.c.kind == KIND, work_items.c.status == "pending",
            work_items.c.idempotency_key.like("test-rollup-%"))).scalar_one())


def _outcomes(services: Any) -> tuple[int, int]:
    with services.db.read() as c:
        rows = dict(c.execute(sa.select(work_items.c.status, sa.func.count())
                              .where(work_items.c.kind == KIND)
                              .group_by(work_items.c.status)).all())
    return int(rows.get("done", 0)), int(rows.get("quarantined", 0))


def _get(url: str) -> str:
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return str(answer.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
